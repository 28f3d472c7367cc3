package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
)

func ids(owners []db.LeaseOwner) map[string]bool {
	m := make(map[string]bool, len(owners))
	for _, o := range owners {
		m[o.ID] = true
	}
	return m
}

// Several Sentinels on one database each hold a lease; none excludes
// another.
func TestLease_TwoCoexist(t *testing.T) {
	t.Parallel()
	d, url := openTest(t)
	ctx := testContext(t)
	other, err := Open(ctx, url) // a second Sentinel's handle
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	a, err := d.LeaseAcquire(ctx, db.LeaseOwner{Host: "host-a", PID: 1, Endpoint: "tcp://a:5555"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Release(context.Background()) })
	b, err := other.LeaseAcquire(ctx, db.LeaseOwner{Host: "host-b", PID: 2, Endpoint: "tcp://b:5555"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Release(context.Background()) })
	if a.Owner().ID == b.Owner().ID || a.Owner().ID == "" {
		t.Fatalf("lease ids %q and %q", a.Owner().ID, b.Owner().ID)
	}
	for _, l := range []db.Lease{a, b} {
		if err := l.Renew(ctx); err != nil {
			t.Errorf("renew %s: %v", l.Owner().Host, err)
		}
	}
	live, err := d.LeasesLive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(live); len(live) != 2 || !got[a.Owner().ID] || !got[b.Owner().ID] {
		t.Fatalf("live sentinels %v, want a and b", live)
	}
	for _, o := range live {
		want := map[string]string{"host-a": "tcp://a:5555", "host-b": "tcp://b:5555"}[o.Host]
		if o.Endpoint != want || o.PID == 0 || o.StartedAt.IsZero() || !o.ExpiresAt.After(o.HeartbeatAt) {
			t.Errorf("row %+v", o)
		}
	}

	// A clean stop removes only its own row.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	live, err = d.LeasesLive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 || live[0].ID != b.Owner().ID {
		t.Errorf("after a's release: %v", live)
	}
	if err := a.Renew(ctx); !errors.Is(err, db.ErrLeaseLost) {
		t.Errorf("renew after release: %v, want db.ErrLeaseLost", err)
	}
}

func TestLease_RenewMovesExpiry(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
	ctx := testContext(t)
	l, err := d.LeaseAcquire(ctx, db.LeaseOwner{Host: "h", PID: 1}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	first := l.Owner()
	if d := first.ExpiresAt.Sub(first.HeartbeatAt); d != 2*time.Second {
		t.Errorf("expiry %s after the heartbeat, want 2s", d)
	}
	time.Sleep(20 * time.Millisecond) // let the server's clock move
	if err := l.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if !l.Owner().ExpiresAt.After(first.ExpiresAt) || !l.Owner().HeartbeatAt.After(first.HeartbeatAt) {
		t.Errorf("renewal did not move the row: %+v then %+v", first, l.Owner())
	}
}

// A Sentinel that stops renewing (killed, paused, cut off) is seen as gone
// once its lease expires, by the server's clock; the expired row is never
// revived by a late renewal, and removing it spares live rows.
func TestLease_ExpiredIsDetected(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
	ctx := testContext(t)
	dead, err := d.LeaseAcquire(ctx, db.LeaseOwner{Host: "dead", PID: 1}, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dead.Release(context.Background()) })
	alive, err := d.LeaseAcquire(ctx, db.LeaseOwner{Host: "alive", PID: 2}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = alive.Release(context.Background()) })

	eventually(t, 5*time.Second, "expired", func() bool {
		expired, err := d.LeasesExpired(ctx)
		return err == nil && len(expired) == 1 && expired[0].ID == dead.Owner().ID
	})
	live, err := d.LeasesLive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 || live[0].ID != alive.Owner().ID {
		t.Errorf("live sentinels %v, want only alive", live)
	}
	if err := dead.Renew(ctx); !errors.Is(err, db.ErrLeaseLost) {
		t.Errorf("late renewal: %v, want db.ErrLeaseLost", err)
	}

	for _, tc := range []struct {
		name string
		id   string
		want bool
	}{
		{"Expired", dead.Owner().ID, true},
		{"AlreadyRemoved", dead.Owner().ID, false},
		{"Live", alive.Owner().ID, false},
		{"Unknown", "nobody", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			removed, err := d.LeaseRemoveExpired(ctx, tc.id)
			if err != nil || removed != tc.want {
				t.Errorf("LeaseRemoveExpired = %v, %v; want %v", removed, err, tc.want)
			}
		})
	}
	if err := alive.Renew(ctx); err != nil {
		t.Errorf("the live Sentinel's renewal: %v", err)
	}
}

func TestLease_RefusesZeroTTL(t *testing.T) {
	t.Parallel()
	d, _ := openTest(t)
	if _, err := d.LeaseAcquire(testContext(t), db.LeaseOwner{Host: "h", PID: 1}, 0); err == nil {
		t.Error("LeaseAcquire with ttl 0: no error")
	}
}
