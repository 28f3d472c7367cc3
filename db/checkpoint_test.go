package db

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestCheckpointer_CopiesTheWALWithoutTheWriter: the writer never
// checkpoints (wal_autocheckpoint=0), so the database file itself only grows
// when the checkpointer copies the WAL into it, which it must do on its own,
// while the DB stays open.
func TestCheckpointer_CopiesTheWALWithoutTheWriter(t *testing.T) {
	path := testPath(t)
	db := openAt(t, path)
	s := seedBasics(t, db, "p")
	size := func() int64 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	before := size()
	if err := db.JobsEnqueueBulk(context.Background(), s.fv, "p", 0, 20000); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for size() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes 10 s after 20,000 inserts: nothing checkpointed", before)
		}
		time.Sleep(20 * time.Millisecond) // polling the file size
	}
}
