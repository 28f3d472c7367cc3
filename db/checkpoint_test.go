package db

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestCheckpointer_CopiesTheWALWithoutTheWriter: the writer never
// checkpoints on its own (wal_autocheckpoint=0), so the database file only
// grows when the checkpointer copies the WAL into it, which it must do while
// the DB stays open and idle.
func TestCheckpointer_CopiesTheWALWithoutTheWriter(t *testing.T) {
	path := testPath(t)
	db := openAt(t, path)
	s := seedBasics(t, db, "p")
	before := fileSize(t, path)
	// 2,000 rows are some 60 pages of table and indexes: the file grows
	// by them only through a checkpoint. 20,000 proved the same at ten
	// times the CPU under the race detector.
	if err := db.JobsEnqueueBulk(context.Background(), s.fv, "p", 0, 2000); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for fileSize(t, path) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes 10 s after 2,000 inserts: nothing checkpointed", before)
		}
		time.Sleep(20 * time.Millisecond) // polling a file's size
	}
}

// TestCheckpointer_WALStaysBoundedUnderSteadyWrites: a writer committing
// back to back leaves a checkpoint on another connection no moment to
// finish, and a WAL that is never copied to its end never starts over. The
// writer's own checkpoint between transactions must keep it bounded by
// finishFrames plus what is written in one checkpointInterval: ~50 MB here,
// at ~9,000 commits of ~25 KB a second. Without it the WAL of this test
// passes 800 MB.
func TestCheckpointer_WALStaysBoundedUnderSteadyWrites(t *testing.T) {
	path := testPath(t)
	db := openAt(t, path)
	s := seedBasics(t, db, "p")
	ctx := context.Background()
	var peak int64
	commits := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); commits++ {
		if _, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p", Priority: int64(commits % 7)}); err != nil {
			t.Fatal(err)
		}
		if commits%200 == 0 {
			peak = max(peak, fileSize(t, path+"-wal"))
		}
	}
	const limit = 128 << 20
	t.Logf("%d commits, WAL peak %.1f MB", commits, float64(peak)/(1<<20))
	if peak > limit {
		t.Fatalf("WAL reached %.1f MB over %d back-to-back commits; want it restarted (< %d MB)", float64(peak)/(1<<20), commits, limit>>20)
	}
}
