//go:build docker

// Package docker_test runs the docker-compose stack (docker-compose.yml at
// the top level) with the real Compose tool and kills, disconnects and
// restarts its containers. Run it with
//
//	go test -tags docker -count=1 ./tests/docker/...
//
// It needs a Docker engine and either the `docker compose` plugin or
// `docker-compose`; the image is built once by docker/build.sh, so nothing
// is pulled. Each test runs its own Compose project and removes its
// containers, network and volumes when it ends, failed or not.
package docker_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// image is the tag the tests build and run (not casparian:local, so a
// user's image is left alone).
const image = "casparian:test"

// Deadlines of the waits; generous, the machine may be loaded.
const (
	upTimeout   = 90 * time.Second
	jobsTimeout = 120 * time.Second
)

var (
	repoRoot string
	compose  []string // "docker compose" or "docker-compose"
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "docker tests:", err)
		return 1
	}
	repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "docker tests: no Docker engine: %v\n%s", err, out)
		return 1
	}
	compose = composeTool()
	if compose == nil {
		fmt.Fprintln(os.Stderr, "docker tests: neither `docker compose` nor `docker-compose` works")
		return 1
	}
	start := time.Now()
	build := exec.Command(filepath.Join(repoRoot, "docker", "build.sh"))
	build.Env = append(os.Environ(), "CASPARIAN_IMAGE="+image)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "docker tests: docker/build.sh: %v\n%s", err, out)
		return 1
	}
	fmt.Fprintf(os.Stderr, "docker tests: %s, image %s built in %s\n", strings.Join(compose, " "), image, time.Since(start).Round(time.Second))
	return m.Run()
}

// composeTool prefers the Compose plugin and falls back to docker-compose.
func composeTool() []string {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if exec.Command("docker-compose", "version").Run() == nil {
		return []string{"docker-compose"}
	}
	return nil
}

// stack is one Compose project of the test stack.
type stack struct {
	t        *testing.T
	project  string
	env      []string
	httpPort int
	// token is the read token the Sentinel made on its first start
	// (--init-secrets), read from its secrets volume.
	token string
	// conclusions saved from containers that `down` removed.
	saved []conclusion
	// files are the project's Compose files; sentinelService is the
	// Sentinel whose API the helpers ask and through whose container files
	// are copied in and out; workerServices are the workers' services.
	files           []string
	sentinelService string
	workerServices  []string
}

// newStack prepares a project of docker-compose.yml named after the test,
// with free host ports and jobDelay as the workers' --job-delay, and
// registers its removal.
func newStack(t *testing.T, jobDelay time.Duration) *stack {
	t.Helper()
	s := newProject(t, jobDelay,
		[]string{"docker-compose.yml", filepath.Join("tests", "docker", "compose.test.yml")}, "sentinel", "worker")
	s.httpPort = freePort(t)
	s.env = append(s.env,
		"CASPARIAN_HTTP_PORT="+strconv.Itoa(s.httpPort),
		"CASPARIAN_ZMQ_PORT="+strconv.Itoa(freePort(t)),
	)
	return s
}

// newProject prepares a project of the Compose files (relative to the
// repository) named after the test, and registers its removal: the last
// lines of every container's log if the test failed, then `down -v`.
func newProject(t *testing.T, jobDelay time.Duration, files []string, sentinelService string, workerServices ...string) *stack {
	t.Helper()
	sum := sha256.Sum256([]byte(t.Name()))
	s := &stack{t: t, project: fmt.Sprintf("cstest%d%s", os.Getpid()%10000, hex.EncodeToString(sum[:3])),
		files: files, sentinelService: sentinelService, workerServices: workerServices}
	s.env = append(os.Environ(),
		"CASPARIAN_IMAGE="+image,
		"CASPARIAN_TEST_JOB_DELAY="+jobDelay.String(),
		"COMPOSE_PROJECT_NAME="+s.project,
	)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := s.composeOut("logs", "--no-color", "--tail", "60")
			t.Logf("logs of %s:\n%s", s.project, out)
		}
		if out, err := s.composeOut("down", "-v", "--remove-orphans", "-t", "10"); err != nil {
			t.Errorf("cleanup: down: %v\n%s", err, out)
		}
	})
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// composeOut runs the Compose tool on the project and returns its output.
func (s *stack) composeOut(args ...string) (string, error) {
	full := append(append([]string{}, compose[1:]...), "-p", s.project)
	for _, f := range s.files {
		full = append(full, "-f", filepath.Join(repoRoot, f))
	}
	full = append(full, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, compose[0], full...)
	cmd.Env = s.env
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *stack) compose(args ...string) string {
	s.t.Helper()
	out, err := s.composeOut(args...)
	if err != nil {
		s.t.Fatalf("%s %s: %v\n%s", strings.Join(compose, " "), strings.Join(args, " "), err, out)
	}
	return out
}

// docker runs the docker CLI and returns its trimmed output.
func (s *stack) docker(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// up starts the stack and waits until the Sentinel is healthy (by its
// container healthcheck and by /healthz) and n workers are registered.
func (s *stack) up(n int) []worker {
	s.t.Helper()
	start := time.Now()
	s.compose("up", "-d")
	s.eventually(upTimeout, "the sentinel container is healthy", func() (bool, string) {
		st := s.docker("inspect", "-f", "{{.State.Health.Status}}", s.sentinel())
		return st == "healthy", st
	})
	ws := s.waitWorkers(n)
	s.t.Logf("%s up and %d workers registered in %s", s.project, n, time.Since(start).Round(100*time.Millisecond))
	return ws
}

// sentinel is the Sentinel's container id (sentinelService's).
func (s *stack) sentinel() string {
	s.t.Helper()
	return s.container(s.sentinelService)
}

// container is the id of a service's one container.
func (s *stack) container(service string) string {
	s.t.Helper()
	ids := strings.Fields(s.compose("ps", "-q", service))
	if len(ids) != 1 {
		s.t.Fatalf("want one %s container, got %q", service, ids)
	}
	return ids[0]
}

// workerContainers maps each worker container's hostname (the prefix of its
// workers' identities) to its container id.
func (s *stack) workerContainers() map[string]string {
	s.t.Helper()
	out := map[string]string{}
	for _, service := range s.workerServices {
		for _, id := range strings.Fields(s.compose("ps", "-q", service)) {
			out[s.docker("inspect", "-f", "{{.Config.Hostname}}", id)] = id
		}
	}
	return out
}

// containerOf returns the hostname part of a worker identity
// (<hostname>-<pid>-<hex>).
func containerOf(identity string) string {
	host, _, _ := strings.Cut(identity, "-")
	return host
}

// crash SIGKILLs a container's main process from the host, as a crash or
// the kernel's OOM killer would. It is not `docker kill`: the engine records
// that as an operator's stop, and the restart policy then leaves the
// container down (measured on this machine's Docker 20.10: RestartCount
// stays 0 after `docker kill` with unless-stopped and with always), while
// the policy exists precisely to bring back a process that died. The tests
// must therefore run on the Docker host, allowed to signal its processes.
func (s *stack) crash(container string) {
	s.t.Helper()
	pid, err := strconv.Atoi(s.docker("inspect", "-f", "{{.State.Pid}}", container))
	if err != nil || pid <= 0 {
		s.t.Fatalf("container %s has no process (%d, %v)", container, pid, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		s.t.Fatalf("kill -9 %d (container %s): %v; the docker tests must run on the Docker host with permission to signal its processes", pid, container, err)
	}
}

// copyIn copies files from samples/ (or absolute paths) into the inbox
// with one `docker cp`, so the scanner finds them all in the same pass.
func (s *stack) copyIn(paths ...string) {
	s.t.Helper()
	dir := s.t.TempDir()
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			p = filepath.Join(repoRoot, "samples", p)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), raw, 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	s.docker("cp", dir+"/.", s.sentinel()+":/data/inbox/")
}

// copyOutput copies /data/output out of the stack into a temp dir.
func (s *stack) copyOutput() string {
	s.t.Helper()
	dir := s.t.TempDir()
	s.docker("cp", s.sentinel()+":/data/output", dir)
	return filepath.Join(dir, "output")
}

// readToken reads the read token from the Sentinel's secrets volume, as
// README's Docker section tells a user to (docker cp of the file, as a tar
// stream).
func (s *stack) readToken() (string, error) {
	ids := strings.Fields(s.compose("ps", "-q", s.sentinelService))
	if len(ids) != 1 {
		return "", fmt.Errorf("want one %s container, got %q", s.sentinelService, ids)
	}
	out, err := exec.Command("docker", "cp", ids[0]+":/keys/sentinel/api_tokens", "-").Output()
	if err != nil {
		return "", fmt.Errorf("docker cp api_tokens: %w", err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	if _, err := tr.Next(); err != nil {
		return "", fmt.Errorf("api_tokens tar: %w", err)
	}
	body, err := io.ReadAll(tr)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "read" {
			return f[1], nil
		}
	}
	return "", errors.New("api_tokens has no read token")
}

// get decodes a JSON answer of the Sentinel's API, asked with the read
// token.
func (s *stack) get(path string, v any) error {
	if s.token == "" {
		tok, err := s.readToken()
		if err != nil {
			return err
		}
		s.token = tok
	}
	return s.getWith(path, s.token, v)
}

// getWith asks the API with token ("" for none).
func (s *stack) getWith(path, token string, v any) error {
	client := http.Client{Timeout: 5 * time.Second}
	req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", s.httpPort, path), nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, res.Status, body)
	}
	if raw, ok := v.(*string); ok {
		*raw = string(body)
		return nil
	}
	return json.Unmarshal(body, v)
}

// job is a row of the queue as the API shows it.
type job struct {
	ID            int64               `json:"id"`
	Status        string              `json:"status"`
	Plugin        string              `json:"plugin"`
	FilePath      string              `json:"file_path"`
	FileVersionID int64               `json:"file_version_id"`
	RetryCount    int64               `json:"retry_count"`
	Attempt       int64               `json:"attempt"`
	Worker        string              `json:"worker"`
	ErrorMessage  string              `json:"error_message"`
	Metrics       map[string]int64    `json:"metrics"`
	Artifacts     []map[string]string `json:"artifacts"`
}

// key names a job by file and plugin: "orders.csv csv".
func (j job) key() string { return filepath.Base(j.FilePath) + " " + j.Plugin }

// jobs reads the whole queue; nil while the API does not answer (the
// Sentinel may be restarting).
func (s *stack) jobs() []job {
	var page struct {
		Jobs  []job `json:"jobs"`
		Total int   `json:"total"`
	}
	if err := s.get("/api/v1/jobs?limit=1000", &page); err != nil {
		return nil
	}
	if page.Total > len(page.Jobs) {
		s.t.Fatalf("%d jobs, more than one page", page.Total)
	}
	return page.Jobs
}

type worker struct {
	ID             string  `json:"id"`
	Ready          bool    `json:"ready"`
	RunningJobs    []int64 `json:"running_jobs"`
	KeyFingerprint string  `json:"key_fingerprint"`
}

func (s *stack) workers() ([]worker, error) {
	var page struct {
		Workers []worker `json:"workers"`
	}
	err := s.get("/api/v1/workers", &page)
	return page.Workers, err
}

// waitWorkers waits until exactly n workers are registered and ready.
func (s *stack) waitWorkers(n int) []worker {
	s.t.Helper()
	var ws []worker
	s.eventually(upTimeout, fmt.Sprintf("%d workers registered", n), func() (bool, string) {
		var err error
		if ws, err = s.workers(); err != nil {
			return false, err.Error()
		}
		ready := 0
		for _, w := range ws {
			if w.Ready {
				ready++
			}
		}
		return ready == n && len(ws) == n, fmt.Sprint(ws)
	})
	return ws
}

// metric reads one unlabelled value from /metrics.
func (s *stack) metric(name string) (float64, error) {
	var text string
	if err := s.get("/metrics", &text); err != nil {
		return 0, err
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// waitJob waits until the job matching key exists and cond holds for it.
func (s *stack) waitJob(key, what string, cond func(job) bool) job {
	s.t.Helper()
	var found job
	s.eventually(jobsTimeout, key+": "+what, func() (bool, string) {
		for _, j := range s.jobs() {
			if j.key() == key {
				found = j
				return cond(j), fmt.Sprintf("%+v", j)
			}
		}
		return false, "no such job yet"
	})
	return found
}

// waitDone waits until the queue holds exactly the expected jobs (by key),
// all concluded.
func (s *stack) waitDone(expected []string) []job {
	s.t.Helper()
	var jobs []job
	s.eventually(jobsTimeout, fmt.Sprintf("%d jobs concluded", len(expected)), func() (bool, string) {
		jobs = s.jobs()
		counts := map[string]int{}
		open := 0
		for _, j := range jobs {
			counts[j.Status]++
			if j.Status == "QUEUED" || j.Status == "RUNNING" || j.Status == "PENDING" {
				open++
			}
		}
		return len(jobs) >= len(expected) && open == 0, fmt.Sprintf("%d jobs %v", len(jobs), counts)
	})
	return jobs
}

// conclusion is one "job concluded" line of a worker's log.
type conclusion struct {
	Container string
	WorkerID  string `json:"worker_id"`
	JobID     int64  `json:"job_id"`
	Status    string `json:"status"`
}

// conclusions reads every worker container's log (all its runs, restarts
// included) plus what was saved before a `down`, and returns the jobs each
// worker concluded. It also checks that every log line is JSON.
func (s *stack) conclusions() []conclusion {
	s.t.Helper()
	out := append([]conclusion{}, s.saved...)
	for host, id := range s.workerContainers() {
		logs, err := exec.Command("docker", "logs", id).CombinedOutput()
		if err != nil {
			s.t.Fatalf("docker logs %s: %v", id, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(logs))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				conclusion
				Message string `json:"message"`
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				s.t.Errorf("worker %s logged a line that is not JSON: %q", host, sc.Text())
				continue
			}
			if line.Message == "job concluded" {
				line.conclusion.Container = host
				out = append(out, line.conclusion)
			}
		}
	}
	return out
}

// checkFinal is what every test asserts at the end: the queue holds exactly
// the expected jobs (by file and plugin, once each), none is left QUEUED or
// RUNNING, each is COMPLETED, and each was concluded SUCCESS by exactly one
// worker run, except those in lateReceipts (a second, ignored receipt). It
// returns the jobs by key.
func (s *stack) checkFinal(expected []string, lateReceipts map[int64]bool) map[string]job {
	s.t.Helper()
	jobs := s.waitDone(expected)
	byKey := map[string]job{}
	for _, j := range jobs {
		if prev, dup := byKey[j.key()]; dup {
			s.t.Errorf("two jobs for %s: %d and %d", j.key(), prev.ID, j.ID)
		}
		byKey[j.key()] = j
		if j.Status != "COMPLETED" {
			s.t.Errorf("job %d (%s) is %s: %s", j.ID, j.key(), j.Status, j.ErrorMessage)
		}
		if len(j.Artifacts) == 0 {
			s.t.Errorf("job %d (%s) reports no output", j.ID, j.key())
		}
	}
	for _, k := range expected {
		if _, ok := byKey[k]; !ok {
			s.t.Errorf("no job for %s (jobs: %v)", k, keys(byKey))
		}
	}
	if len(byKey) != len(expected) {
		s.t.Errorf("%d jobs, want %d: %v", len(byKey), len(expected), keys(byKey))
	}
	attempts := map[int64]int{}
	for _, j := range jobs {
		attempts[j.Attempt]++
	}
	s.t.Logf("%d jobs COMPLETED; jobs by attempt: %v", len(jobs), attempts)
	successes := map[int64][]string{}
	for _, c := range s.conclusions() {
		if c.Status == "SUCCESS" {
			successes[c.JobID] = append(successes[c.JobID], c.WorkerID)
		}
	}
	for _, j := range jobs {
		n := len(successes[j.ID])
		switch {
		case n == 0:
			s.t.Errorf("job %d (%s) is COMPLETED but no worker logged its SUCCESS", j.ID, j.key())
		case n > 1 && !lateReceipts[j.ID]:
			s.t.Errorf("job %d (%s) was completed %d times: by %v", j.ID, j.key(), n, successes[j.ID])
		}
		if n >= 1 && !contains(successes[j.ID], j.Worker) {
			s.t.Errorf("job %d (%s) is recorded for %s, but SUCCESS came from %v", j.ID, j.key(), j.Worker, successes[j.ID])
		}
	}
	return byKey
}

// checkOutputs copies the output folder out and checks that every job's
// artifacts exist there; SQLite tables must hold the job's rows.
func (s *stack) checkOutputs(jobs map[string]job) string {
	s.t.Helper()
	out := s.copyOutput()
	for _, j := range jobs {
		for _, a := range j.Artifacts {
			scheme, path, _ := strings.Cut(a["uri"], "://")
			rel, ok := strings.CutPrefix(path, "/data/output/")
			if !ok {
				s.t.Errorf("job %d: artifact %s outside /data/output", j.ID, a["uri"])
				continue
			}
			table := ""
			if scheme == "sqlite" {
				rel, table = filepath.Dir(rel), filepath.Base(rel)
			}
			local := filepath.Join(out, rel)
			if st, err := os.Stat(local); err != nil || st.Size() == 0 {
				s.t.Errorf("job %d: output %s missing or empty (%v)", j.ID, a["uri"], err)
				continue
			}
			if table != "" {
				got := querySQLite(s.t, local, fmt.Sprintf(`SELECT COUNT(*) FROM %q WHERE _job_id = ?`, table), j.ID)
				if got != j.Metrics["rows"] {
					s.t.Errorf("job %d: %d rows in %s, its receipt says %d", j.ID, got, a["uri"], j.Metrics["rows"])
				}
			}
		}
	}
	return out
}

func querySQLite(t *testing.T, path, q string, args ...any) int64 {
	t.Helper()
	conn, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n int64
	if err := conn.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %s: %v", path, q, err)
	}
	return n
}

// eventually polls cond every 250 ms until it holds or d passes; cond's
// text says what it saw, for the failure message.
func (s *stack) eventually(d time.Duration, what string, cond func() (bool, string)) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for {
		ok, seen := cond()
		if ok {
			return
		}
		last = seen
		if time.Now().After(deadline) {
			s.t.Fatalf("after %s: still not %s; last seen: %s", d, what, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// logLines returns the JSON lines of a container's log whose message is msg.
func (s *stack) logLines(container, msg string) []map[string]any {
	s.t.Helper()
	logs, err := exec.Command("docker", "logs", container).CombinedOutput()
	if err != nil {
		s.t.Fatalf("docker logs: %v", err)
	}
	var out []map[string]any
	for _, line := range strings.Split(string(logs), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func keys(m map[string]job) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
