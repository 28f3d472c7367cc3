// Command casparian-testworker runs the minimal protocol-v4 test worker as its
// own process, so tests can kill it (or the Sentinel) with SIGKILL. Each job
// reads its file (size, lines, SHA-256), optionally after a delay.
//
// With --job-log it prints a line to stdout when each job starts and ends,
// so that a test can check no job ran on two workers at once:
//
//	job start <job_id> <endpoint> <unix_ns>
//	job end <job_id> <endpoint> <unix_ns> <status>
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/casparian/sentinel/internal/buildinfo"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/transport"
)

// version is set by release builds: -ldflags "-X main.version=..."; --version
// prints it with the build information.
var version string

func main() {
	endpoint := flag.String("endpoint", "tcp://127.0.0.1:5555", "Sentinel ROUTER endpoint, or a comma-separated list to fail over between (with --sentinel-timeout)")
	sentinelTimeout := flag.Duration("sentinel-timeout", 0, "move to the next endpoint after this long without a message from the Sentinel (0 = never)")
	jobLog := flag.Bool("job-log", false, "print a line to stdout when each job starts and ends")
	identity := flag.String("identity", "", "ZeroMQ identity (default: random)")
	caps := flag.String("capabilities", "*", "comma-separated plugin names, * for any")
	slots := flag.Int("slots", 1, "max concurrent jobs")
	delay := flag.Duration("job-delay", 0, "extra time each job takes")
	crashOn := flag.String("crash-on-plugin", "", "exit abruptly (status 3) when dispatched this plugin: a poison pill")
	heartbeat := flag.Duration("heartbeat", time.Second, "unsolicited heartbeat interval (0 = only answer)")
	sentinelKey := flag.String("sentinel-key", "", "the Sentinel's CURVE public key: its .pub file or the 40 Z85 characters (with --curve-secret-key)")
	secretKey := flag.String("curve-secret-key", "", "file with this worker's CURVE secret key (with --sentinel-key); default: plaintext")
	showVersion := flag.Bool("version", false, "print the version and build information, then exit")
	flag.Parse()
	if *showVersion {
		buildinfo.Print(os.Stdout, "casparian-testworker", version)
		return
	}
	curve, err := transport.LoadCurveClient(*sentinelKey, *secretKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, "casparian-testworker:", err)
		os.Exit(2)
	}

	run := func(ctx context.Context, j testworker.Job) transport.Conclude {
		if *crashOn != "" && j.Dispatch.PluginName == *crashOn {
			fmt.Fprintf(os.Stderr, "crashing on job %d (%s)\n", j.ID, *crashOn)
			os.Exit(3)
		}
		if *jobLog {
			fmt.Printf("job start %d %s %d\n", j.ID, j.Endpoint, time.Now().UnixNano())
		}
		receipt := transport.Conclude{Status: transport.StatusAborted, ErrorMessage: "aborted"}
		select {
		case <-time.After(*delay):
			receipt = testworker.FileStats(ctx, j)
		case <-ctx.Done():
		}
		if *jobLog {
			fmt.Printf("job end %d %s %d %s\n", j.ID, j.Endpoint, time.Now().UnixNano(), receipt.Status)
		}
		return receipt
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w, err := testworker.Start(ctx, testworker.Options{
		Endpoint: *endpoint, Identity: *identity, Capabilities: strings.Split(*caps, ","),
		Slots: *slots, Run: run, HeartbeatInterval: *heartbeat, Curve: curve,
		SentinelTimeout: *sentinelTimeout,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "casparian-testworker:", err)
		os.Exit(1)
	}
	fmt.Printf("worker %s connected to %s\n", w.Identity(), w.Endpoint())
	<-ctx.Done()
	w.Close()
}
