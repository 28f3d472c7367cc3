package db

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

func TestLeaseAcquire_SecondOwnerIsRefusedWithTheHolder(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	first, second := openAt(t, path), openAt(t, path)
	lease, err := first.LeaseAcquire(ctx, LeaseOwner{Host: "alpha", PID: 101, Endpoint: "tcp://127.0.0.1:5555"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lease.Release(ctx) }() // what the test checks is above
	if _, ok := lease.Previous(); ok {
		t.Error("a new database reports a previous owner")
	}

	_, err = second.LeaseAcquire(ctx, LeaseOwner{Host: "beta", PID: 202}, time.Minute)
	var held *LeaseHeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second acquire: %v, want a *LeaseHeldError", err)
	}
	for _, want := range []string{"alpha", "101", "tcp://127.0.0.1:5555", "since " + lease.Owner().StartedAt.Format(time.RFC3339)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// The refused one changed nothing.
	if got, err := second.LeaseHolder(ctx); err != nil || got.ID != lease.Owner().ID {
		t.Errorf("holder after refusal = %+v, %v", got, err)
	}
	if err := lease.Renew(ctx); err != nil {
		t.Errorf("renew: %v", err)
	}
}

func TestLeaseAcquire_TakesOverAStaleRow(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	db := openAt(t, path)
	// A row whose owner is gone: nobody holds the lock file.
	_, err := db.writer.ExecContext(ctx, `INSERT INTO sentinel_lease
		(name, owner_id, host, pid, endpoint, started_at, heartbeat_at, expires_at)
		VALUES ('sentinel', 'dead', 'gone-host', 999, 'tcp://x:1', ?, ?, ?)`,
		formatTime(testNow), formatTime(testNow), formatTime(testNow.Add(time.Hour*1e4)))
	if err != nil {
		t.Fatal(err)
	}
	lease, err := db.LeaseAcquire(ctx, LeaseOwner{Host: "alpha", PID: 1}, time.Minute)
	if err != nil {
		t.Fatalf("acquire over a stale row: %v", err)
	}
	prev, ok := lease.Previous()
	if !ok || prev.Host != "gone-host" || prev.PID != 999 || !prev.StartedAt.Equal(testNow) {
		t.Errorf("previous = %+v, %v", prev, ok)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.LeaseHolder(ctx); !errors.Is(err, job.ErrNotFound) {
		t.Errorf("holder after release: %v, want job.ErrNotFound", err)
	}
	// Released: the next one takes it without a previous owner.
	again, err := db.LeaseAcquire(ctx, LeaseOwner{Host: "alpha", PID: 2}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = again.Release(ctx) }()
	if _, ok := again.Previous(); ok {
		t.Error("a released lease left a previous owner")
	}
}

func TestLease_RenewFailsOnceTheRowNamesSomeoneElse(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	lease, err := db.LeaseAcquire(ctx, LeaseOwner{Host: "alpha", PID: 1}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lease.Release(ctx) }() // what the test checks is above
	if _, err := db.writer.ExecContext(ctx, `UPDATE sentinel_lease SET owner_id = 'intruder'`); err != nil {
		t.Fatal(err)
	}
	if err := lease.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("renew: %v, want ErrLeaseLost", err)
	}
}

func TestLease_CheckNoticesDeletedOrReplacedFiles(t *testing.T) {
	t.Run("DatabaseDeleted", func(t *testing.T) {
		path := testPath(t)
		db := openAt(t, path)
		lease := acquire(t, db)
		if err := lease.Check(); err != nil {
			t.Fatalf("check before: %v", err)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := lease.Check(); !errors.Is(err, ErrFileGone) || !strings.Contains(err.Error(), "deleted") {
			t.Errorf("check: %v, want ErrFileGone (deleted)", err)
		}
	})
	t.Run("DatabaseReplaced", func(t *testing.T) {
		path := testPath(t)
		db := openAt(t, path)
		lease := acquire(t, db)
		if err := os.WriteFile(path+".new", []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
		if err := lease.Check(); !errors.Is(err, ErrFileGone) || !strings.Contains(err.Error(), "replaced") {
			t.Errorf("check: %v, want ErrFileGone (replaced)", err)
		}
	})
	t.Run("LockFileDeleted", func(t *testing.T) {
		path := testPath(t)
		db := openAt(t, path)
		lease := acquire(t, db)
		if err := os.Remove(path + ".lock"); err != nil {
			t.Fatal(err)
		}
		if err := lease.Check(); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("check: %v, want ErrLeaseLost", err)
		}
	})
}

func TestLease_RenewReportsBusyWhileAnotherConnectionHoldsTheLock(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	db := openAt(t, path)
	lease := acquire(t, db)
	raw := rawOpen(t, path)
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.ExecContext(ctx, "ROLLBACK") }()
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := lease.Renew(rctx); !errors.Is(err, ErrBusy) {
		t.Errorf("renew under a lock: %v, want ErrBusy", err)
	}
}

func acquire(t *testing.T, db *DB) Lease {
	t.Helper()
	lease, err := db.LeaseAcquire(context.Background(), LeaseOwner{Host: "h", PID: 1}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lease.Release(context.Background()) })
	return lease
}
