//go:build linux

package db

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// watchWithin bounds a wait for a signal: far above the milliseconds it
// takes, and only spent when a test fails.
const watchWithin = 5 * time.Second

// drain empties ch of a signal left from before.
func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

// signalThatMoved waits for signals on ch until one after which DataVersion
// differs from before: what the queue actor does with them.
func signalThatMoved(t *testing.T, d *DB, ch <-chan struct{}, before int64) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(watchWithin)
	defer deadline.Stop()
	for {
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no signal within %s after which data_version moved from %d", watchWithin, before)
		}
		v, err := d.DataVersion(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if v != before {
			return time.Since(start)
		}
	}
}

// A commit by another connection (here a bare database/sql handle of the
// file, as a scout's would be) signals QueueChanges, and DataVersion then
// shows it.
func TestQueueChanges_SignalsAnotherConnectionsCommit(t *testing.T) {
	path := testPath(t)
	d := openAt(t, path)
	s := seedBasics(t, d, "p")
	ch, err := d.QueueChanges()
	if err != nil {
		t.Fatalf("QueueChanges: %v", err)
	}
	raw := rawOpen(t, path)
	for i := range 5 {
		drain(ch)
		before, err := d.DataVersion(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		rawExec(t, raw, fmt.Sprintf(`INSERT INTO cf_processing_queue (file_version_id, plugin_name, status, priority, retry_count)
			VALUES (%d, 'p', 'QUEUED', 0, 0)`, s.fv))
		took := signalThatMoved(t, d, ch, before)
		t.Logf("insert %d: signalled and seen after %s", i, took)
	}
	// Asking again gives the same watch.
	again, err := d.QueueChanges()
	if err != nil || again != ch {
		t.Errorf("second QueueChanges = %v, %v; want the same channel", again, err)
	}
}

// Many commits make few signals: at most one per watchGapMin (and one
// after the burst), fewer as the burst goes on, and nobody has to read them
// for the watch to go on.
func TestQueueChanges_FoldsBursts(t *testing.T) {
	path := testPath(t)
	d := openAt(t, path)
	ch, err := d.QueueChanges()
	if err != nil {
		t.Fatalf("QueueChanges: %v", err)
	}
	raw := rawOpen(t, path)
	rawExec(t, raw, `PRAGMA synchronous=OFF`, `CREATE TABLE burst (n INTEGER)`)

	// Nobody reads: the watch must neither block nor stop.
	for i := range 200 {
		rawExec(t, raw, fmt.Sprintf(`INSERT INTO burst VALUES (%d)`, i))
	}
	if n := len(ch); n != 1 {
		t.Errorf("%d signals waiting after an unread burst, want 1", n)
	}

	// Someone reads while a burst commits.
	drain(ch)
	const commits = 2000
	got := make(chan int)
	stop := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case <-ch:
				n++
			case <-stop:
				got <- n
				return
			}
		}
	}()
	start := time.Now()
	for i := range commits {
		rawExec(t, raw, fmt.Sprintf(`INSERT INTO burst VALUES (%d)`, i))
	}
	took := time.Since(start)
	close(stop) // the signal after the burst may be left out: the bound is an upper one
	signals := <-got
	limit := int(took/watchGapMin) + 2
	t.Logf("%d commits in %s made %d signals (at most %d allowed)", commits, took, signals, limit)
	if signals > limit || signals >= commits {
		t.Errorf("%d commits in %s made %d signals, want at most one per %s (%d) and fewer than the commits",
			commits, took, signals, watchGapMin, limit)
	}

	// The watch still works after the burst.
	before, err := d.DataVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	drain(ch)
	rawExec(t, raw, `INSERT INTO burst VALUES (-1)`)
	signalThatMoved(t, d, ch, before)
}

// The database's own writer makes signals too: the watch cannot tell
// whose commit it saw, so DataVersion decides.
func TestQueueChanges_OwnCommitsSignalToo(t *testing.T) {
	d := openTest(t)
	ch, err := d.QueueChanges()
	if err != nil {
		t.Fatalf("QueueChanges: %v", err)
	}
	drain(ch)
	before, err := d.DataVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seedBasics(t, d, "p")
	signalThatMoved(t, d, ch, before)
}

// Close stops the watch (TestMain's goleak checks its goroutine is gone),
// and a closed DB starts none.
func TestQueueChanges_StopsWithClose(t *testing.T) {
	d, err := Open(context.Background(), "sqlite://"+testPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.QueueChanges(); err != nil {
		t.Fatalf("QueueChanges: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.QueueChanges(); !errors.Is(err, errWatchClosed) {
		t.Errorf("QueueChanges after Close: %v, want errWatchClosed", err)
	}
}

// A database reached through a link is watched where SQLite keeps its WAL:
// beside the real file.
func TestQueueChanges_FollowsALinkedPath(t *testing.T) {
	real := testPath(t)
	d0 := openAt(t, real)
	s := seedBasics(t, d0, "p")
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	d := openAt(t, link)
	ch, err := d.QueueChanges()
	if err != nil {
		t.Fatalf("QueueChanges: %v", err)
	}
	drain(ch)
	before, err := d.DataVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, d0, s.fv, "p", 0)
	signalThatMoved(t, d, ch, before)
}

// event encodes one inotify event as the kernel does.
func event(mask uint32, name string) []byte {
	size := 0
	if name != "" {
		size = (len(name) + 1 + 15) / 16 * 16 // NUL-terminated, padded
	}
	b := make([]byte, unix.SizeofInotifyEvent+size)
	binary.NativeEndian.PutUint32(b[0:4], 1)
	binary.NativeEndian.PutUint32(b[4:8], mask)
	binary.NativeEndian.PutUint32(b[12:16], uint32(size))
	copy(b[unix.SizeofInotifyEvent:], name)
	return b
}

func TestQueueWatch_ScanFiltersByName(t *testing.T) {
	w := &queueWatch{names: [][]byte{[]byte("flow.db"), []byte("flow.db-wal")}}
	cat := func(evs ...[]byte) []byte {
		var b []byte
		for _, e := range evs {
			b = append(b, e...)
		}
		return b
	}
	for _, c := range []struct {
		name       string
		events     []byte
		ours, gone bool
	}{
		{"WAL written", event(unix.IN_MODIFY, "flow.db-wal"), true, false},
		{"database written", event(unix.IN_MODIFY, "flow.db"), true, false},
		{"WAL created", event(unix.IN_CREATE, "flow.db-wal"), true, false},
		{"database renamed into place", event(unix.IN_MOVED_TO, "flow.db"), true, false},
		{"shared memory", event(unix.IN_MODIFY, "flow.db-shm"), false, false},
		{"journal", event(unix.IN_MODIFY, "flow.db-journal"), false, false},
		{"another file", event(unix.IN_MODIFY, "other.db-wal"), false, false},
		{"a longer name", event(unix.IN_MODIFY, "flow.db-wal.bak"), false, false},
		{"ours after others", cat(event(unix.IN_MODIFY, "a"), event(unix.IN_CREATE, "b.txt"), event(unix.IN_MODIFY, "flow.db-wal")), true, false},
		{"queue overflowed", event(unix.IN_Q_OVERFLOW, ""), true, false},
		{"watch removed", event(unix.IN_IGNORED, ""), true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ours, gone := w.scan(c.events)
			if ours != c.ours || gone != c.gone {
				t.Errorf("scan = %v, %v; want %v, %v", ours, gone, c.ours, c.gone)
			}
		})
	}
}

// After one write the watch looks again with doubling gaps: a commit that
// becomes visible late (its writer fsyncs the WAL between the write and the
// index update) is still seen, and a quiet file costs few looks.
func TestQueueWatch_LooksAgainWithGrowingGaps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flow.db")
	w, err := startQueueWatch(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.close() }()
	if err := os.WriteFile(path+"-wal", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	const window = 500 * time.Millisecond
	start := time.Now()
	var at []time.Duration
	timeout := time.After(window)
collect:
	for {
		select {
		case <-w.ready:
			at = append(at, time.Since(start))
		case <-timeout:
			break collect
		}
	}
	t.Logf("signals after one write, within %s: %v", window, at)
	// 2, 4, 8, … ms apart: about 8 in the window. Every 2 ms would be 250;
	// a single look after the write (the old watch) would be 2.
	if len(at) < 5 || len(at) > 12 {
		t.Fatalf("%d signals within %s after one write, want 5 to 12 (looks with doubling gaps)", len(at), window)
	}
	if last := at[len(at)-1] - at[len(at)-2]; last < 16*time.Millisecond {
		t.Errorf("the last gap between looks is %s, want it grown to 16ms or more", last)
	}
}
