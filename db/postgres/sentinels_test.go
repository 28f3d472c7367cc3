package postgres

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/casparian/sentinel/db"
)

// runningIDs is what d answers for: its JobsRunning("").
func runningIDs(t *testing.T, ctx context.Context, d *DB) []int64 {
	t.Helper()
	rs, err := d.JobsRunning(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, r := range rs {
		ids = append(ids, r.Ref.JobID)
	}
	return ids
}

// Two Sentinels on one database: each answers for the jobs claimed
// through its own lease; a worker that re-identifies with the other moves
// its jobs there (adoption); and when a Sentinel goes, the leader takes its
// jobs only after the grace its workers have to fail over.
func TestSentinels_RecoveryTouchesOnlyDeadSentinelsJobs(t *testing.T) {
	t.Parallel()
	url := migratedDatabase(t)
	ctx := testContext(t)
	open := func() *DB {
		d, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		return d
	}
	a, b := open(), open()
	const ttl = time.Second
	la, err := a.LeaseAcquire(ctx, db.LeaseOwner{Host: "a", PID: 1}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = la.Release(context.Background()) })
	eventually(t, 10*time.Second, "a leads", la.Leading)
	lb, err := b.LeaseAcquire(ctx, db.LeaseOwner{Host: "b", PID: 2}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lb.Release(context.Background()) })
	if lb.Leading() {
		t.Fatal("b leads beside a")
	}

	fx := seedWith(t, a)
	fx.activate("p")
	for range 3 {
		fx.enqueue(t, "p", 0)
	}
	fa := fixture{s: a, fv: fx.fv}
	fb := fixture{s: b, fv: fx.fv}
	ja := fa.claim(t, testNow, "wa", 1, "p")
	jb := fb.claim(t, testNow, "wb", 2, "p")
	if len(ja) != 1 || len(jb) != 2 {
		t.Fatalf("claims: a %d, b %d", len(ja), len(jb))
	}
	idA, idB := claimIDs(ja), claimIDs(jb)

	// Each answers for its own claims; a leads, but b is alive.
	if got := runningIDs(t, ctx, a); !slices.Equal(got, idA) {
		t.Errorf("a answers for %v, want %v", got, idA)
	}
	if got := runningIDs(t, ctx, b); !slices.Equal(got, idB) {
		t.Errorf("b answers for %v, want %v", got, idB)
	}

	// Worker wa fails over to b: b adopts its job.
	held, err := b.JobsRunning(ctx, "wa")
	if err != nil || len(held) != 1 || held[0].Ref.JobID != idA[0] {
		t.Fatalf("b.JobsRunning(wa) = %v, %v", held, err)
	}
	if got := runningIDs(t, ctx, a); len(got) != 0 {
		t.Errorf("after the adoption a still answers for %v", got)
	}
	want := slices.Sorted(slices.Values(append(slices.Clone(idA), idB...)))
	if got := runningIDs(t, ctx, b); !slices.Equal(got, want) {
		t.Errorf("after the adoption b answers for %v, want %v", got, want)
	}

	// b's lease is taken back to a one-second one and left to expire, as
	// if b were killed: a, the leader, answers for b's jobs only once the
	// grace (a TTL) after the expiry has passed.
	if _, err := b.pool.Exec(ctx, `UPDATE sentinel_lease SET expires_at = now() WHERE id = $1`, lb.Owner().ID); err != nil {
		t.Fatal(err)
	}
	lb.(*Lease).election.Stop()
	if got := runningIDs(t, ctx, a); len(got) != 0 {
		t.Errorf("a took b's jobs %v within the grace", got)
	}
	eventually(t, 10*time.Second, "a answers for the dead b's jobs", func() bool {
		return slices.Equal(runningIDs(t, ctx, a), want)
	})
	// A Sentinel that does not lead never takes them.
	c := open()
	lc, err := c.LeaseAcquire(ctx, db.LeaseOwner{Host: "c", PID: 3}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lc.Release(context.Background()) })
	if lc.Leading() {
		t.Fatal("c leads beside a")
	}
	if got := runningIDs(t, ctx, c); len(got) != 0 {
		t.Errorf("c, not the leader, answers for %v", got)
	}
}

// Leadership follows the lease: the first Sentinel leads, and its release
// hands the lead to the next.
func TestSentinels_ReleaseHandsTheLeadOver(t *testing.T) {
	t.Parallel()
	url := migratedDatabase(t)
	ctx := testContext(t)
	var ds []*DB
	var ls []db.Lease
	for i := range 2 {
		d, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		l, err := d.LeaseAcquire(ctx, db.LeaseOwner{Host: "h", PID: i + 1}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Release(context.Background()) })
		ds, ls = append(ds, d), append(ls, l)
	}
	eventually(t, 10*time.Second, "one leader", func() bool { return ls[0].Leading() != ls[1].Leading() })
	first, next := 0, 1
	if ls[1].Leading() {
		first, next = 1, 0
	}
	if !ds[first].leading.Load() || ds[next].leading.Load() {
		t.Error("the DBs' leading flags do not follow the election")
	}
	if err := ls[first].Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ls[first].Leading() {
		t.Error("a released lease still leads")
	}
	eventually(t, 10*time.Second, "the other leads", ls[next].Leading)
	live, err := ds[next].LeasesLive(ctx)
	if err != nil || len(live) != 1 || live[0].ID != ls[next].Owner().ID {
		t.Errorf("live after the release: %v, %v", live, err)
	}
}

// The leader's renewal forgets the rows of Sentinels gone for over an hour,
// unless jobs are still RUNNING under them.
func TestSentinels_LeaderForgetsOldLeases(t *testing.T) {
	t.Parallel()
	d := openStore(t)
	ctx := testContext(t)
	l, err := d.LeaseAcquire(ctx, db.LeaseOwner{Host: "leader", PID: 1}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	eventually(t, 10*time.Second, "it leads", l.Leading)
	fx := seedWith(t, d)
	fx.activate("p")
	fx.enqueue(t, "p", 0)
	old := func(id string) {
		if _, err := d.pool.Exec(ctx, `INSERT INTO sentinel_lease (id, host, pid, endpoint, started_at, heartbeat_at, expires_at)
			VALUES ($1, 'gone', 9, '', now() - interval '3 hours', now() - interval '2 hours', now() - interval '2 hours')`, id); err != nil {
			t.Fatal(err)
		}
	}
	old("settled")
	old("busy")
	d.SetSentinelID("busy")
	if got := fx.claim(t, testNow, "w", 1, "p"); len(got) != 1 {
		t.Fatalf("claimed %d jobs, want 1", len(got))
	}
	d.SetSentinelID(l.Owner().ID)
	if err := l.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []string
	rows, err := d.pool.Query(ctx, `SELECT id FROM sentinel_lease ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"busy", l.Owner().ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("lease rows %v, want %v (the settled one forgotten)", ids, want)
	}
}
