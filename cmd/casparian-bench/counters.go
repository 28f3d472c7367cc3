package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// counters are figures of one Sentinel process that explain a rate: how
// often it entered the kernel, how often it was switched out, and (with
// its HTTP server on) how many database rounds it ran. They are read from
// /proc and /metrics before and after a measurement, never during it, so
// reading them does not perturb the run.
type counters struct {
	syscalls        float64 // syscr + syscw of /proc/<pid>/io: reads and writes, sockets included
	voluntary       float64 // voluntary_ctxt_switches, every thread
	involuntary     float64 // nonvoluntary_ctxt_switches, every thread
	claims          float64 // casparian_db_batch_seconds_count{op="claim"}
	concludes       float64 // casparian_db_batch_seconds_count{op="conclude"}
	messagesSent    float64 // casparian_messages_sent_total
	messagesArrived float64 // casparian_messages_received_total
}

// readCounters reads them for one Sentinel; http "" leaves the database
// rounds at zero.
func readCounters(ctx context.Context, s *sentinelProc, http string) counters {
	c := readProcCounters(s.cmd.Process.Pid)
	if http != "" {
		c.claims = scrapeCounter(ctx, http, `casparian_db_batch_seconds_count{op="claim"}`)
		c.concludes = scrapeCounter(ctx, http, `casparian_db_batch_seconds_count{op="conclude"}`)
		c.messagesSent = scrapeCounter(ctx, http, "casparian_messages_sent_total")
		c.messagesArrived = scrapeCounter(ctx, http, "casparian_messages_received_total")
	}
	return c
}

// readProcCounters reads the syscalls and context switches of process pid.
func readProcCounters(pid int) counters {
	var c counters
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		c.syscalls = procField(string(raw), "syscr:") + procField(string(raw), "syscw:")
	}
	// /proc/<pid>/status counts the main thread only: sum the threads.
	if tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); err == nil {
		for _, t := range tasks {
			raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
			if err != nil {
				continue // the thread ended meanwhile
			}
			c.voluntary += procField(string(raw), "voluntary_ctxt_switches:")
			c.involuntary += procField(string(raw), "nonvoluntary_ctxt_switches:")
		}
	}
	return c
}

// procField is the number after a "name:" line of a /proc file, 0 if absent.
func procField(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

// printCounters prints what changed between two readings, per 1,000 jobs.
// Threads that ended between the readings take their context switches with
// them: that count is a lower bound.
func printCounters(out io.Writer, before, after, workers0, workers1 counters, jobs int, withRounds bool) {
	k := 1000 / float64(jobs)
	fmt.Fprintf(out, "  sentinel per 1,000 jobs: %.0f syscalls (read+write), %.0f context switches (%.0f involuntary)",
		(after.syscalls-before.syscalls)*k, (after.voluntary+after.involuntary-before.voluntary-before.involuntary)*k,
		(after.involuntary-before.involuntary)*k)
	if withRounds {
		claims, concludes := after.claims-before.claims, after.concludes-before.concludes
		fmt.Fprintf(out, "; %.1f claim rounds, %.1f conclude batches (%.0f jobs per claim round); messages %.0f in, %.0f out",
			claims*k, concludes*k, float64(jobs)/max(claims, 1),
			(after.messagesArrived-before.messagesArrived)*k, (after.messagesSent-before.messagesSent)*k)
	}
	fmt.Fprintf(out, "\n  workers (this process) per 1,000 jobs: %.0f syscalls (read+write), %.0f context switches (%.0f involuntary)\n",
		(workers1.syscalls-workers0.syscalls)*k, (workers1.voluntary+workers1.involuntary-workers0.voluntary-workers0.involuntary)*k,
		(workers1.involuntary-workers0.involuntary)*k)
}
