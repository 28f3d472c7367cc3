//go:build linux

package db

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// watchMask is what the queue watch asks inotify for, on the database's
// folder:
//
//   - IN_MODIFY: a write(2) to the file. Every commit writes the WAL (in WAL
//     mode, which a Sentinel's database always is, and which is a property
//     of the file: other processes' connections use it too), and a writer in
//     rollback-journal mode or a checkpoint writes the database file itself.
//     This is the event that carries nearly all the news.
//   - IN_CREATE and IN_MOVED_TO: the WAL or the database file made anew (the
//     last connection to close deletes the WAL, the next one creates it; a
//     restore renames a file into place). The writes that follow are
//     IN_MODIFY as well; these cost nothing while nothing is created.
//
// Not IN_CLOSE_WRITE: a commit has always made IN_MODIFY before any close,
// and every connection opens the files read-write, so a process that only
// read would wake the Sentinel each time it closed. Not the -shm file: SQLite
// writes it through mmap, which makes no events. The folder rather than the
// files, because a watch on a file follows its inode, and files are made
// anew under the same names: the WAL by the first connection after all had
// closed, the database by a restore. Events are filtered by name.
const watchMask = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_MOVED_TO

// queueWatch reads an inotify descriptor on the database's folder and
// signals ready when the database file or its WAL was written.
type queueWatch struct {
	file  *os.File // the inotify descriptor, non-blocking: reads wait in Go's poller
	names [][]byte // the database's file name and its WAL's
	ready chan struct{}
	done  chan struct{}
}

// startQueueWatch watches the folder of the database at path.
func startQueueWatch(path string) (*queueWatch, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	// SQLite resolves links and keeps the WAL beside the real file.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	dir, base := filepath.Split(abs)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			return nil, fmt.Errorf("inotify_init1: %w (the limit is fs.inotify.max_user_instances)", err)
		}
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask|unix.IN_ONLYDIR); err != nil {
		_ = unix.Close(fd) // the watch error is the one to report
		if errors.Is(err, unix.ENOSPC) {
			return nil, fmt.Errorf("inotify_add_watch %s: %w (the limit is fs.inotify.max_user_watches)", dir, err)
		}
		return nil, fmt.Errorf("inotify_add_watch %s: %w", dir, err)
	}
	w := &queueWatch{
		// A non-blocking descriptor goes into Go's poller: Read waits there,
		// a read deadline works, and Close wakes a waiting Read.
		file:  os.NewFile(uintptr(fd), "inotify"),
		names: [][]byte{[]byte(base), []byte(base + "-wal")},
		ready: make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	go w.run()
	return w, nil
}

func (w *queueWatch) run() {
	defer close(w.done)
	// Room for many events: each is 16 bytes and a name padded to 16.
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	gap := watchGapMin
	var last time.Time // the last signal for an event
	settle := watchSettle
	for {
		n, err := w.file.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Quiet for settle since the last look: look once more, and
			// again after twice as long, until watchSettleMax.
			w.signal()
			gap = watchGapMin
			if settle >= watchSettleMax {
				_ = w.file.SetReadDeadline(time.Time{})
				continue
			}
			settle = min(2*settle, watchSettleMax)
			_ = w.file.SetReadDeadline(time.Now().Add(settle))
			continue
		}
		if err != nil {
			// Closed, or the descriptor broke: the caller's poll remains.
			return
		}
		ours, gone := w.scan(buf[:n])
		if !ours {
			continue
		}
		w.signal()
		if gone {
			// The folder was removed or unmounted; no event will come
			// again. The database watch (actors) notices the file is gone.
			return
		}
		now := time.Now()
		// Pace: under load the WAL is written thousands of times a second;
		// what happens during the gap waits in the kernel's queue, folded.
		// Events that were waiting when the last gap ended mean the writes
		// go on: wait longer.
		if now.Sub(last) < gap+watchGapMin {
			gap = min(2*gap, watchGapMax)
		} else {
			gap = watchGapMin
		}
		last = now
		time.Sleep(gap)
		// Set after the gap, or a gap longer than watchSettle would end
		// the next read at once.
		settle = watchSettle
		_ = w.file.SetReadDeadline(time.Now().Add(settle))
	}
}

// scan reports whether events name the database or its WAL (or may have:
// the kernel's queue overflowed), and whether the watch itself is gone.
func (w *queueWatch) scan(b []byte) (ours, gone bool) {
	for len(b) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(b[4:8])
		size := int(binary.NativeEndian.Uint32(b[12:16]))
		end := min(unix.SizeofInotifyEvent+size, len(b))
		name := bytes.TrimRight(b[unix.SizeofInotifyEvent:end], "\x00")
		b = b[end:]
		switch {
		case mask&unix.IN_Q_OVERFLOW != 0:
			ours = true
		case mask&unix.IN_IGNORED != 0:
			ours, gone = true, true
		case mask&watchMask != 0:
			for _, want := range w.names {
				if bytes.Equal(name, want) {
					ours = true
				}
			}
		}
	}
	return ours, gone
}

// signal leaves one signal in ready, unless one is waiting already.
func (w *queueWatch) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// close closes the descriptor, which ends run, and waits for it.
func (w *queueWatch) close() error {
	err := w.file.Close()
	<-w.done
	return err
}
