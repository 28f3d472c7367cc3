package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ours is the main module's benchmark and Sentinel, built once per run of
// this command.
type ours struct {
	bench, sentinel string // binaries
}

// mainModule is the module the Sentinel is in.
const mainModule = "github.com/casparian/sentinel"

// findRepo returns the main module's folder: repo when given, else the
// nearest folder above the current one whose go.mod declares mainModule
// (from bench/peers/river that is ../../..).
func findRepo(repo string) (string, error) {
	if repo != "" {
		abs, err := filepath.Abs(repo)
		if err != nil {
			return "", err
		}
		if !declares(abs) {
			return "", fmt.Errorf("--repo %s: no go.mod of module %s there", repo, mainModule)
		}
		return abs, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		if declares(d) {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no folder above %s holds the go.mod of module %s: pass --repo", dir, mainModule)
		}
	}
}

// declares reports whether dir/go.mod is the main module's.
func declares(dir string) bool {
	raw, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return f[1] == mainModule
		}
	}
	return false
}

// buildOurs builds casparian-bench and casparian-sentinel from the main
// module at repo into dir.
func buildOurs(ctx context.Context, repo, dir string) (ours, error) {
	b := ours{bench: filepath.Join(dir, "casparian-bench"), sentinel: filepath.Join(dir, "casparian-sentinel")}
	for _, x := range []struct{ out, pkg string }{
		{b.bench, mainModule + "/cmd/casparian-bench"},
		{b.sentinel, mainModule + "/cmd/casparian-sentinel"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", x.out, x.pkg)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return ours{}, fmt.Errorf("go build %s in %s: %w\n%s", x.pkg, repo, err, out)
		}
	}
	return b, nil
}

// runOurs runs casparian-bench once as a child process on a fresh
// database (a new SQLite file in its own folder, or its own new database
// on the cluster) and reads its figures.
func runOurs(ctx context.Context, b ours, c *cluster, o options, dir string, round int) (result, error) {
	work := filepath.Join(dir, fmt.Sprintf("ours-%d", round))
	if err := os.MkdirAll(work, 0o755); err != nil {
		return result{}, err
	}
	defer func() { _ = os.RemoveAll(work) }() // the SQLite file and logs of one run
	args := []string{
		"--jobs", strconv.Itoa(o.jobs), "--workers", strconv.Itoa(o.workers), "--slots", strconv.Itoa(o.slots),
		"--sentinel-bin", b.sentinel, "--dir", work, "--timeout", o.timeout.String(),
	}
	if o.oursDatabase == "postgres" {
		// casparian-bench makes a database of its own there and drops it.
		args = append(args, "--database", c.url("postgres"))
	}
	cmd := exec.Command(b.bench, args...)
	// Its own process group, the Sentinel it starts included: on Ctrl-C
	// this command stops them in order (the Sentinel takes SIGINT as a
	// shutdown) instead of the terminal signalling everyone at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	if err := cmd.Start(); err != nil {
		return result{}, fmt.Errorf("start %s: %w", b.bench, err)
	}
	waited := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stdout, &out))
		for sc.Scan() {
			fmt.Printf("    casparian-bench: %s\n", sc.Text())
		}
		waited <- cmd.Wait()
	}()
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-waited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-waited
		}
		return result{}, ctx.Err()
	}
	if err != nil {
		return result{}, fmt.Errorf("casparian-bench %s: %w", strings.Join(args, " "), err)
	}
	r, err := parseOurs(out.String(), o.jobs)
	if err != nil {
		return result{}, err
	}
	r.note = fmt.Sprintf("W=%d C=%d, %s", o.workers, o.slots, o.oursDatabase)
	return r, nil
}

var (
	fullLoad      = regexp.MustCompile(`(?m)^full load: (\d+) jobs in ([\d.]+)s = (\d+) jobs/s \|.*$`)
	sentinelCPU   = regexp.MustCompile(`\| sentinel CPU ([\d.]+) s per 1,000 jobs`)
	postgresCPU   = regexp.MustCompile(`\| postgres CPU ([\d.]+) s per 1,000 jobs`)
	postgresUnkn  = regexp.MustCompile(`\| postgres CPU unknown: ([^|]*)`)
	workersCPU    = regexp.MustCompile(`\| workers CPU ([\d.]+) s per 1,000 jobs`)
	databaseCount = regexp.MustCompile(`(?m)^jobs in the database: (\d+) COMPLETED, (\d+) QUEUED, (\d+) RUNNING, (\d+) FAILED`)
)

// parseOurs reads casparian-bench's output: the full-load line
//
//	full load: N jobs in Xs = R jobs/s | … | sentinel CPU S s per 1,000 jobs | … [| postgres CPU P s per 1,000 jobs] | workers CPU W s per 1,000 jobs
//
// and the database's counts after it. The store's CPU is the Sentinel's
// (SQLite runs inside it) plus PostgreSQL's when it ran there.
func parseOurs(out string, jobs int) (result, error) {
	m := fullLoad.FindStringSubmatch(out)
	if m == nil {
		return result{}, fmt.Errorf("casparian-bench printed no \"full load:\" line:\n%s", out)
	}
	line := m[0]
	n, _ := strconv.Atoi(m[1])
	secs, _ := strconv.ParseFloat(m[2], 64)
	rate, _ := strconv.ParseFloat(m[3], 64)
	if n != jobs {
		return result{}, fmt.Errorf("casparian-bench ran %d jobs, not %d: %s", n, jobs, line)
	}
	figure := func(re *regexp.Regexp, what string) (float64, error) {
		m := re.FindStringSubmatch(line)
		if m == nil {
			return 0, fmt.Errorf("casparian-bench's line has no %s figure (a build older than this bench?): %s", what, line)
		}
		return strconv.ParseFloat(m[1], 64)
	}
	sent, err := figure(sentinelCPU, "sentinel CPU")
	if err != nil {
		return result{}, err
	}
	work, err := figure(workersCPU, "workers CPU")
	if err != nil {
		return result{}, err
	}
	store := sent
	if m := postgresUnkn.FindStringSubmatch(line); m != nil {
		return result{}, fmt.Errorf("casparian-bench could not read PostgreSQL's CPU: %s", strings.TrimSpace(m[1]))
	}
	if m := postgresCPU.FindStringSubmatch(line); m != nil {
		pg, _ := strconv.ParseFloat(m[1], 64)
		store += pg
	}
	c := databaseCount.FindStringSubmatch(out)
	if c == nil {
		return result{}, fmt.Errorf("casparian-bench printed no \"jobs in the database:\" line:\n%s", out)
	}
	if c[1] != strconv.Itoa(jobs) || c[2] != "0" || c[3] != "0" || c[4] != "0" {
		return result{}, fmt.Errorf("casparian-bench left %s COMPLETED, %s QUEUED, %s RUNNING, %s FAILED of %d jobs", c[1], c[2], c[3], c[4], jobs)
	}
	perK := func(v float64) time.Duration { return time.Duration(v * float64(jobs) / 1000 * float64(time.Second)) }
	return result{
		system:  "ours",
		jobs:    jobs,
		elapsed: time.Duration(secs * float64(time.Second)),
		rate:    rate,
		store:   perK(store),
		workers: perK(work),
	}, nil
}
