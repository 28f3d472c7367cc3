package postgres

import (
	"testing"
	"time"
)

// leaders counts the elections that say they lead.
func leaders(es ...*Election) int {
	n := 0
	for _, e := range es {
		if e.Leader() {
			n++
		}
	}
	return n
}

func TestElection_OneLeaderHandedOverWhenItsSessionDies(t *testing.T) {
	t.Parallel()
	_, url := openTest(t)
	ctx := testContext(t)

	// Two Sentinels, each with its own handle on the database.
	dbs := make([]*DB, 2)
	es := make([]*Election, 2)
	for i := range dbs {
		db, err := Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		dbs[i] = db
		es[i] = db.Election(50 * time.Millisecond)
		es[i].Start(ctx)
		defer es[i].Stop()
	}
	eventually(t, 5*time.Second, "one leader", func() bool { return leaders(es...) == 1 })
	first, second := es[0], es[1]
	if !first.Leader() {
		first, second = second, first
	}
	// It stays that way: the follower keeps trying and keeps failing.
	time.Sleep(300 * time.Millisecond)
	if !first.Leader() || second.Leader() {
		t.Fatalf("leadership moved without cause: first %v, second %v", first.Leader(), second.Leader())
	}
	select {
	case <-first.Changed():
	default:
		t.Error("the leader's Changed did not fire")
	}

	for _, tc := range []struct {
		name string
		end  func(t *testing.T, e *Election)
	}{
		{
			// The leader's connection dies under it (its Sentinel
			// was cut off, or an operator ended the session).
			name: "SessionKilled",
			end: func(t *testing.T, e *Election) {
				pid := e.pid.Load()
				if pid == 0 {
					t.Fatal("the leader has no session")
				}
				var ok bool
				err := connect(t, url).QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&ok)
				if err != nil || !ok {
					t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
				}
			},
		},
		{
			// The leader stops (its Sentinel shuts down).
			name: "LeaderStops",
			end:  func(t *testing.T, e *Election) { e.Stop() },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !first.Leader() || second.Leader() {
				t.Fatalf("before: first %v, second %v", first.Leader(), second.Leader())
			}
			tc.end(t, first)
			eventually(t, 5*time.Second, "the other one leading", func() bool {
				return second.Leader() && !first.Leader()
			})
			// The old leader, if it still campaigns, reconnects and
			// stays a follower.
			time.Sleep(300 * time.Millisecond)
			if first.Leader() || !second.Leader() {
				t.Fatalf("after: first %v, second %v", first.Leader(), second.Leader())
			}
			first, second = second, first
		})
	}
}

func TestElection_StopWithoutStart(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t)
	e := db.Election(0)
	e.Stop()
	e.Stop()
	if e.Leader() {
		t.Error("an election never started leads")
	}
}
