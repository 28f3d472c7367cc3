package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// Linux).
const userHZ = 100

// procTimes is what the bench reads of /proc/<pid>/stat.
type procTimes struct {
	ppid     int
	own      time.Duration // utime + stime
	children time.Duration // cutime + cstime: children that exited and were reaped
}

func readProc(pid int) (procTimes, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procTimes{}, err
	}
	// The second field, the command name, is in parentheses and may hold
	// spaces and parentheses: the fields that follow start after the last
	// ')'.
	s := string(raw)
	end := strings.LastIndexByte(s, ')')
	if end < 0 || end+2 > len(s) {
		return procTimes{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[end+2:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procTimes{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	field := func(n int) int64 { v, _ := strconv.ParseInt(f[n-3], 10, 64); return v }
	ticks := func(t int64) time.Duration { return time.Duration(t) * time.Second / userHZ }
	return procTimes{
		ppid:     int(field(4)),
		own:      ticks(field(14) + field(15)),
		children: ticks(field(16) + field(17)),
	}, nil
}

// serverCPU is the CPU time PostgreSQL has used: the postmaster's own, that
// of its children that exited (its cutime+cstime: connections closed,
// autovacuum workers done), and that of every living child (backends,
// checkpointer, WAL writer, autovacuum, …), found by scanning /proc for
// processes whose parent is the postmaster.
func serverCPU(postmaster int) (time.Duration, error) {
	pm, err := readProc(postmaster)
	if err != nil {
		return 0, fmt.Errorf("PostgreSQL's postmaster (pid %d): %w", postmaster, err)
	}
	total := pm.own + pm.children
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == postmaster {
			continue
		}
		// A child that exits between the Glob and the read shows up in the
		// postmaster's cutime at the next reading instead.
		if st, err := readProc(pid); err == nil && st.ppid == postmaster {
			total += st.own + st.children
		}
	}
	return total, nil
}

// selfCPU is this process's user+system CPU time so far
// (getrusage(RUSAGE_SELF): every thread, River's goroutines included).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAverage is the first field of /proc/loadavg (the last minute), "?"
// when unreadable.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
