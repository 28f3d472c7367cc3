package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/casparian/sentinel/db/postgres"
)

// server is the database's own side of a run. On SQLite it is nil: the
// database is a library inside the Sentinel, whose CPU is counted as the
// Sentinel's. On PostgreSQL it reads the server's CPU when the server runs
// on this host:
//
//   - pg_backend_pid() of one of the bench's connections is a server
//     process; its parent (/proc/<pid>/stat) is the postmaster. It counts
//     as found when both are named "postgres" and the parent started
//     within 10 s of pg_postmaster_start_time(), so a server elsewhere
//     (another host, a container's pid namespace) whose pid happens to
//     exist here is not mistaken for it.
//   - Its CPU is the postmaster's utime+stime, plus cutime+cstime (every
//     child that exited and was reaped: connections the bench and the
//     Sentinels closed), plus utime+stime+cutime+cstime of each living
//     child (backends, checkpointer, WAL writer, autovacuum, …) found by
//     scanning /proc for that parent.
//
// This needs no privilege on the server, only to read /proc here. It
// includes the bench's own counting queries, a few a second after the
// last receipt.
type server struct {
	postmaster int
	unknown    string // why the CPU cannot be read; "" when it can
}

// findServer returns nil for SQLite, and PostgreSQL's server otherwise
// (with the reason when its CPU cannot be read here).
func findServer(ctx context.Context, database string) (*server, error) {
	st, done, err := openStore(ctx, database)
	if err != nil {
		return nil, err
	}
	defer done() // only read
	pg, ok := st.(interface {
		Backend(ctx context.Context) (postgres.Backend, error)
	})
	if !ok {
		return nil, nil
	}
	b, err := pg.Backend(ctx)
	if err != nil {
		return nil, err
	}
	pid, err := postmasterOf(b)
	if err != nil {
		return &server{unknown: err.Error()}, nil
	}
	return &server{postmaster: pid}, nil
}

// postmasterOf finds b's postmaster among this host's processes.
func postmasterOf(b postgres.Backend) (int, error) {
	back, err := readStat(b.PID)
	if err != nil || back.comm != "postgres" {
		return 0, fmt.Errorf("server not on this host (no postgres process %d here)", b.PID)
	}
	pm, err := readStat(back.ppid)
	if err != nil || pm.comm != "postgres" {
		return 0, fmt.Errorf("server not on this host (the parent of process %d is not postgres)", b.PID)
	}
	started, err := startTime(pm)
	if err != nil {
		return 0, err
	}
	if d := started.Sub(b.PostmasterStart); d > 10*time.Second || d < -10*time.Second {
		return 0, fmt.Errorf("server not on this host (process %d started at %s, the server at %s)",
			back.ppid, started.Format(time.RFC3339), b.PostmasterStart.Format(time.RFC3339))
	}
	return back.ppid, nil
}

func (s *server) kind() string {
	if s == nil {
		return "sqlite"
	}
	return "postgres"
}

// cpu is the CPU time of the postmaster and its children, dead and alive;
// 0 when unknown.
func (s *server) cpu() time.Duration {
	if s == nil || s.unknown != "" {
		return 0
	}
	pm, err := readStat(s.postmaster)
	if err != nil {
		return 0
	}
	total := pm.cpu + pm.childCPU
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		// A child that exits between the Glob and the read is counted in
		// the postmaster's cutime at the next reading instead.
		if st, err := readStat(pid); err == nil && st.ppid == s.postmaster {
			total += st.cpu + st.childCPU
		}
	}
	return total
}

// figure is the tail of a measurement's line: "" on SQLite, PostgreSQL's
// CPU per 1,000 jobs, or why it is unknown.
func (s *server) figure(before, after time.Duration, jobs int) string {
	switch {
	case s == nil:
		return ""
	case s.unknown != "":
		return " | postgres CPU unknown: " + s.unknown
	}
	return fmt.Sprintf(" | postgres CPU %.3f s per 1,000 jobs", (after-before).Seconds()*1000/float64(jobs))
}

// procStat is what the bench reads of /proc/<pid>/stat.
type procStat struct {
	comm      string
	ppid      int
	cpu       time.Duration // utime + stime
	childCPU  time.Duration // cutime + cstime: reaped children
	startTick int64         // starttime, in clock ticks after boot
}

const clockTicks = 100 // USER_HZ on Linux

func readStat(pid int) (procStat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may hold spaces.
	s := string(raw)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open || closing+2 > len(s) {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[closing+2:]) // f[0] is field 3, state
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	n := func(field int) int64 { v, _ := strconv.ParseInt(f[field-3], 10, 64); return v }
	ticks := func(t int64) time.Duration { return time.Duration(t) * time.Second / clockTicks }
	return procStat{
		comm:      s[open+1 : closing],
		ppid:      int(n(4)),
		cpu:       ticks(n(14) + n(15)),
		childCPU:  ticks(n(16) + n(17)),
		startTick: n(22),
	}, nil
}

// startTime is when the process started: boot time (btime in /proc/stat)
// plus its starttime.
func startTime(st procStat) (time.Time, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				break
			}
			return time.Unix(boot, 0).Add(time.Duration(st.startTick) * time.Second / clockTicks), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}
