package postgres

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/db/postgres/pgtest"
)

func TestDatabaseCreateAndDrop(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	server := pgtest.Database(t)
	name := fmt.Sprintf("casparian_created_%d", os.Getpid())
	u, err := DatabaseCreate(ctx, server, name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(u, "/"+name+"?") && !strings.HasSuffix(u, "/"+name) {
		t.Errorf("DatabaseCreate URL %s does not name %s", u, name)
	}
	d, err := Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	// The drop must end the sessions still open.
	if err := DatabaseDrop(ctx, server, name); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if d, err := Open(ctx, u); err == nil {
		d.Close()
		t.Errorf("Open after DatabaseDrop succeeded")
	}
	if err := DatabaseDrop(ctx, server, name); err != nil {
		t.Errorf("a second drop: %v", err)
	}
}

func TestBackend_ReportsAServerProcess(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
	b, err := d.Backend(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if b.PID <= 0 || b.PostmasterStart.IsZero() || b.PostmasterStart.After(time.Now().Add(time.Minute)) {
		t.Errorf("Backend = %+v", b)
	}
}
