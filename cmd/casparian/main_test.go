package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/httpapi"
	"github.com/casparian/sentinel/internal/sentineltest"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/testworker"
	"github.com/casparian/sentinel/job"
	"github.com/casparian/sentinel/transport"
)

// casparian runs the CLI in process and returns its exit code and output.
func casparian(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

// ok runs the CLI against url and fails the test unless it exits 0.
func ok(t *testing.T, url string, args ...string) string {
	t.Helper()
	code, out, errOut := casparian(t, nil, append([]string{"--server", url}, args...)...)
	if code != exitOK {
		t.Fatalf("casparian %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func TestCLI_AgainstARunningSentinel(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("p")
	e.Plugin("slow")
	e.File("in/a.csv", "x\ny\n")
	release := make(chan struct{})
	e.Worker(testworker.Options{Identity: "tw-cli", Capabilities: []string{"p", "slow"}, Slots: 2,
		Run: func(ctx context.Context, j testworker.Job) transport.Conclude {
			if j.Dispatch.PluginName == "slow" {
				select {
				case <-release:
				case <-ctx.Done():
					return transport.Conclude{Status: transport.StatusAborted}
				}
			}
			return testworker.FileStats(ctx, j)
		}})

	// enqueue by path, then see it complete in ls and show.
	out := ok(t, e.URL, "jobs", "enqueue", "--plugin", "p", "--file", filepath.Join(e.Root, "in/a.csv"), "--priority", "5")
	var id int64
	if _, err := fmt.Sscanf(out, "queued job %d:", &id); err != nil || !strings.Contains(out, "(priority 5)") {
		t.Fatalf("enqueue said %q", out)
	}
	testwait.Eventually(t, 10*time.Second, "job COMPLETED", func() bool { return e.Job(id).Status == job.StatusCompleted })

	out = ok(t, e.URL, "jobs", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "COMPLETED") ||
		!strings.Contains(lines[1], "tw-cli") || lines[2] != "1 of 1 jobs" {
		t.Errorf("jobs ls:\n%s", out)
	}
	out = ok(t, e.URL, "jobs", "show", fmt.Sprint(id))
	for _, want := range []string{"Status:", "COMPLETED", "Metrics:", "rows=2", "Artifact 1:", "uri=sha256:", "Worker:", "tw-cli"} {
		if !strings.Contains(out, want) {
			t.Errorf("jobs show lacks %q:\n%s", want, out)
		}
	}
	// --json prints the API's document, after the arguments too.
	out = ok(t, e.URL, "jobs", "show", fmt.Sprint(id), "--json")
	var shown struct {
		ID      int64            `json:"id"`
		Status  string           `json:"status"`
		Metrics map[string]int64 `json:"metrics"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil || shown.ID != id || shown.Metrics["rows"] != 2 {
		t.Errorf("jobs show --json = %q (%v)", out, err)
	}
	out = ok(t, e.URL, "--json", "jobs", "ls", "--status", "completed")
	var list struct {
		Total int64 `json:"total"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.Total != 1 {
		t.Errorf("jobs ls --json = %q (%v)", out, err)
	}

	// cancel a RUNNING job; retry is refused for it (not FAILED).
	slow := e.Enqueue(e.File("b.csv", "b\n"), "slow", 0)
	// RUNNING in the database comes a moment before the worker actor holds
	// the claim; the worker list shows what the worker actors hold.
	testwait.Eventually(t, 5*time.Second, "slow job held by the worker", func() bool {
		ws, _ := e.Sentinel.WorkersInfo(context.Background())
		return len(ws) == 1 && len(ws[0].Running) == 1 && ws[0].Running[0] == slow
	})
	out = ok(t, e.URL, "workers", "ls")
	if !strings.Contains(out, "tw-cli") || !strings.Contains(out, "1/2") || !strings.Contains(out, fmt.Sprint(slow)) ||
		!strings.Contains(out, "p,slow") || !strings.Contains(out, "1 workers") {
		t.Errorf("workers ls:\n%s", out)
	}
	out = ok(t, e.URL, "jobs", "cancel", fmt.Sprint(slow))
	if !strings.Contains(out, "ABORT sent") {
		t.Errorf("cancel running said %q", out)
	}
	testwait.Eventually(t, 5*time.Second, "cancelled job SKIPPED", func() bool { return e.Job(slow).Status == job.StatusSkipped })
	code, _, errOut := casparian(t, nil, "--server", e.URL, "jobs", "retry", fmt.Sprint(slow))
	if code != exitError || !strings.Contains(errOut, "only FAILED jobs can be retried") || !strings.Contains(errOut, "HTTP 409") {
		t.Errorf("retry of a skipped job: exit %d, %q", code, errOut)
	}
	code, _, errOut = casparian(t, nil, "--server", e.URL, "jobs", "show", "999")
	if code != exitError || !strings.Contains(errOut, "job 999 not found (HTTP 404)") {
		t.Errorf("show unknown job: exit %d, %q", code, errOut)
	}

	// The scanner's configuration: sources, routes, subscriptions.
	dir := filepath.Join(e.Dir, "more")
	out = ok(t, e.URL, "sources", "add", dir)
	if !strings.Contains(out, dir) {
		t.Errorf("sources add said %q", out)
	}
	if out = ok(t, e.URL, "sources", "ls"); !strings.Contains(out, dir) || !strings.Contains(out, e.Root) {
		t.Errorf("sources ls:\n%s", out)
	}
	if out = ok(t, e.URL, "routes", "add", "*.csv", "csv", "--priority", "2"); !strings.Contains(out, "*.csv → csv") {
		t.Errorf("routes add said %q", out)
	}
	if out = ok(t, e.URL, "routes", "ls"); !strings.Contains(out, "*.csv") {
		t.Errorf("routes ls:\n%s", out)
	}
	if out = ok(t, e.URL, "plugins", "subscribe", "p", "csv", "raw"); !strings.Contains(out, "csv, raw") {
		t.Errorf("plugins subscribe said %q", out)
	}
	out = ok(t, e.URL, "plugins", "ls")
	if !strings.Contains(out, "1.0.0") || !strings.Contains(out, "csv,raw") || !strings.Contains(out, "slow") {
		t.Errorf("plugins ls:\n%s", out)
	}
	out = ok(t, e.URL, "status")
	if !strings.Contains(out, "COMPLETED 1") || !strings.Contains(out, "SKIPPED 1") || !strings.Contains(out, "tw-cli") {
		t.Errorf("status:\n%s", out)
	}
	close(release)
}

func TestCLI_UnreachableSentinelIsAClearError(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: take one and free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, out, errOut := casparian(t, map[string]string{"CASPARIAN_SERVER": "http://" + addr}, "jobs", "ls")
	if code != exitError || out != "" {
		t.Errorf("exit %d, stdout %q", code, out)
	}
	for _, want := range []string{"cannot reach the Sentinel at http://" + addr, "connection refused", "--server", "CASPARIAN_SERVER"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	// The flag beats the environment.
	e := sentineltest.Start(t, nil)
	code, _, errOut = casparian(t, map[string]string{"CASPARIAN_SERVER": "http://" + addr}, "workers", "ls", "--server", e.URL)
	if code != exitOK {
		t.Errorf("--server over CASPARIAN_SERVER: exit %d, %s", code, errOut)
	}
	code, _, _ = casparian(t, map[string]string{"CASPARIAN_SERVER": strings.TrimPrefix(e.URL, "http://")}, "workers", "ls")
	if code != exitOK {
		t.Errorf("a server without scheme: exit %d", code)
	}
}

func TestCLI_UsageErrorsExitTwo(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want string
	}{
		{nil, "Usage: casparian"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"jobs"}, "jobs needs a subcommand"},
		{[]string{"jobs", "delete"}, `unknown subcommand "delete"`},
		{[]string{"jobs", "show"}, "wrong number of arguments"},
		{[]string{"jobs", "show", "1", "2"}, "wrong number of arguments"},
		{[]string{"jobs", "show", "seven"}, `job id must be a positive whole number, got "seven"`},
		{[]string{"jobs", "ls", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"jobs", "enqueue", "--file", "/x"}, "--plugin is required"},
		{[]string{"jobs", "enqueue", "--plugin", "p"}, "--file PATH or --file-version ID"},
		{[]string{"jobs", "enqueue", "--plugin", "p", "--file", "/x", "--config-overrides", "{"}, "not valid JSON"},
		{[]string{"plugins", "subscribe", "p"}, "wrong number of arguments"},
		{[]string{"--server", "ftp://x", "workers", "ls"}, `--server "ftp://x"`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := casparian(t, map[string]string{"CASPARIAN_SERVER": "http://127.0.0.1:1"}, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if !strings.Contains(out+errOut, tc.want) {
				t.Errorf("output lacks %q:\n%s%s", tc.want, out, errOut)
			}
		})
	}
	if code, out, _ := casparian(t, nil, "help"); code != exitOK || !strings.Contains(out, "jobs enqueue") {
		t.Errorf("help: exit %d\n%s", code, out)
	}
	if code, out, _ := casparian(t, nil, "jobs", "ls", "-h"); code != exitOK || !strings.Contains(out, "-status") {
		t.Errorf("jobs ls -h: exit %d\n%s", code, out)
	}
}

func TestCLI_TokenFromFlagOrEnvironment(t *testing.T) {
	t.Parallel()
	const (
		readToken  = "read-token-0123456789abcdefghijk"
		adminToken = "admin-token-0123456789abcdefghij"
	)
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("read "+readToken+"\nadmin "+adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := sentineltest.Start(t, func(c *config.Config) { c.APITokens = path })
	e.Plugin("nobody")
	fv := e.File("a.csv", "a\n")
	queued := fmt.Sprint(e.Enqueue(fv, "nobody", 0))

	refused := func(env map[string]string, args []string, want ...string) {
		t.Helper()
		code, out, errOut := casparian(t, env, append([]string{"--server", e.URL}, args...)...)
		if code != exitError || out != "" {
			t.Errorf("%v: exit %d, stdout %q", args, code, out)
		}
		for _, w := range append(want, "the Sentinel refused the token", "set --token or CASPARIAN_TOKEN") {
			if !strings.Contains(errOut, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, w, errOut)
			}
		}
		for _, tok := range []string{readToken, adminToken} {
			if strings.Contains(errOut, tok) {
				t.Errorf("%v: stderr shows the token:\n%s", args, errOut)
			}
		}
	}
	refused(nil, []string{"jobs", "ls"}, "needs an API token", "HTTP 401")
	refused(nil, []string{"jobs", "ls", "--token", "wrong-token-0123456789abcdefghij"}, "not valid", "HTTP 401")
	refused(map[string]string{"CASPARIAN_TOKEN": readToken}, []string{"jobs", "cancel", queued}, "needs an admin token", "HTTP 403")
	// The flag beats the environment, both ways.
	refused(map[string]string{"CASPARIAN_TOKEN": adminToken}, []string{"--token", readToken, "jobs", "cancel", queued}, "HTTP 403")
	if j := e.Job(mustID(t, queued)); j.Status != job.StatusQueued {
		t.Fatalf("a refused cancel changed the job: %s", j.Status)
	}

	if code, out, errOut := casparian(t, map[string]string{"CASPARIAN_TOKEN": readToken}, "--server", e.URL, "jobs", "ls"); code != exitOK ||
		!strings.Contains(out, "1 of 1 jobs") {
		t.Errorf("jobs ls with CASPARIAN_TOKEN: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := casparian(t, map[string]string{"CASPARIAN_TOKEN": readToken}, "jobs", "cancel", queued, "--server", e.URL, "--token", adminToken)
	if code != exitOK || !strings.Contains(out, "SKIPPED") {
		t.Errorf("cancel with --token admin over a read CASPARIAN_TOKEN: exit %d\n%s%s", code, out, errOut)
	}
	for _, args := range [][]string{{"--server", e.URL, "routes", "add", "*.csv", "csv"}, {"--server", e.URL, "sources", "add", mkdir(t, filepath.Join(e.Dir, "more"))},
		{"--server", e.URL, "plugins", "subscribe", "nobody", "csv"}, {"--server", e.URL, "jobs", "enqueue", "--plugin", "nobody", "--file-version", fmt.Sprint(fv)}} {
		if code, out, errOut := casparian(t, map[string]string{"CASPARIAN_TOKEN": adminToken}, args...); code != exitOK {
			t.Errorf("%v with an admin token: exit %d\n%s%s", args, code, out, errOut)
		}
	}
}

func mustID(t *testing.T, s string) int64 {
	t.Helper()
	var id int64
	if _, err := fmt.Sscan(s, &id); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestCLI_HelpMentionsTheTokenButNeverShowsIt(t *testing.T) {
	t.Parallel()
	env := map[string]string{"CASPARIAN_TOKEN": "secret-token-from-the-environment"}
	for _, args := range [][]string{{"--help"}, {"help"}, {"jobs", "cancel", "-h"}, {"jobs", "ls", "--token", "secret-token-from-a-flag", "-h"}} {
		code, out, errOut := casparian(t, env, args...)
		if code != exitOK {
			t.Errorf("%v: exit %d", args, code)
		}
		if !strings.Contains(out, "-token") || !strings.Contains(out, "CASPARIAN_TOKEN") {
			t.Errorf("%v does not mention --token and CASPARIAN_TOKEN:\n%s", args, out)
		}
		if strings.Contains(out+errOut, "secret-token") {
			t.Errorf("%v shows the token:\n%s%s", args, out, errOut)
		}
	}
}

func TestCLI_VersionExitsZero(t *testing.T) {
	code, out, errOut := casparian(t, map[string]string{"CASPARIAN_SERVER": "http://127.0.0.1:1"}, "--version")
	if code != exitOK || errOut != "" || !strings.HasPrefix(out, "casparian ") || !strings.Contains(out, "  go        go1.") {
		t.Errorf("--version: exit %d, %q %q", code, out, errOut)
	}
	if _, usage, _ := casparian(t, nil, "--help"); !strings.Contains(usage, "casparian --version") {
		t.Errorf("--help does not mention --version:\n%s", usage)
	}
}

func TestCLI_TokenNewPrintsARandomToken(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		code, out, errOut := casparian(t, nil, "token", "new")
		tok := strings.TrimSpace(out)
		if code != exitOK || errOut != "" || !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(tok) {
			t.Fatalf("token new: exit %d, %q %q", code, out, errOut)
		}
		if seen[tok] {
			t.Fatalf("token new printed %s twice", tok)
		}
		seen[tok] = true
		if _, err := httpapi.ParseTokens([]byte("admin " + tok + " ci\n")); err != nil {
			t.Errorf("the Sentinel would refuse the new token: %v", err)
		}
	}
}

// mkdir makes dir and returns it.
func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// On a fresh database a built-in plugin is registered from the CLI, not by
// hand-written JSON: until then its jobs are refused (422, with the hint),
// afterwards accepted, with a warning while no worker can run them.
func TestCLI_AddBuiltinThenEnqueue(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.File("in/a.csv", "x\ny\n")
	file := filepath.Join(e.Root, "in/a.csv")

	code, out, errOut := casparian(t, nil, "--server", e.URL, "jobs", "enqueue", "--plugin", "csv", "--file", file)
	if code != exitError || out != "" || !strings.Contains(errOut, "422") || !strings.Contains(errOut, "casparian plugins add-builtin csv") {
		t.Errorf("enqueue for an unregistered built-in: exit %d\n%s%s", code, out, errOut)
	}
	if c := e.Counts(); c[job.StatusQueued] != 0 {
		t.Errorf("the refused enqueue left jobs: %v", c)
	}
	if out := ok(t, e.URL, "plugins", "add-builtin", "csv", "csv"); !strings.Contains(out, "built-in plugin csv registered (active version builtin), subscribed to: csv") {
		t.Errorf("add-builtin said %q", out)
	}
	if out := ok(t, e.URL, "plugins", "add-builtin", "csv"); !strings.Contains(out, "already registered") {
		t.Errorf("add-builtin again said %q", out)
	}
	if code, _, errOut := casparian(t, nil, "--server", e.URL, "plugins", "add-builtin", "sql"); code != exitError ||
		!strings.Contains(errOut, `"sql" is not a built-in plugin`) {
		t.Errorf("add-builtin of an unknown name: exit %d\n%s", code, errOut)
	}
	code, out, errOut = casparian(t, nil, "--server", e.URL, "jobs", "enqueue", "--plugin", "csv", "--file", file)
	if code != exitOK || !strings.Contains(out, "queued job") || !strings.Contains(errOut, `warning: no connected worker can run plugin "csv"`) {
		t.Errorf("enqueue after add-builtin, no worker: exit %d\n%s%s", code, out, errOut)
	}
	var added struct {
		Changes int `json:"changes"`
		Plugin  struct {
			Active struct{ Version string } `json:"active"`
		} `json:"plugin"`
	}
	if err := json.Unmarshal([]byte(ok(t, e.URL, "--json", "plugins", "add-builtin", "csv")), &added); err != nil ||
		added.Changes != 0 || added.Plugin.Active.Version != "builtin" {
		t.Errorf("add-builtin --json: %+v, %v", added, err)
	}
}

// A bulk action counts first and acts only with --yes; ls filters by path.
func TestCLI_BulkCancelThenList(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("nobody")
	fv := e.File("in/b.txt", "b\n")
	for range 3 {
		e.Enqueue(fv, "nobody", 0)
	}
	if out := ok(t, e.URL, "jobs", "bulk", "cancel", "--plugin", "nobody"); !strings.Contains(out, "3 jobs would be cancelled; run again with --yes") {
		t.Errorf("bulk cancel without --yes said %q", out)
	}
	if c := e.Counts(); c[job.StatusQueued] != 3 {
		t.Errorf("the count-only bulk cancel changed jobs: %v", c)
	}
	if out := ok(t, e.URL, "jobs", "bulk", "cancel", "--plugin", "nobody", "--yes"); !strings.Contains(out, "3 jobs cancelled") {
		t.Errorf("bulk cancel --yes said %q", out)
	}
	if out := ok(t, e.URL, "jobs", "ls", "--status", "skipped", "--path", "IN/B"); !strings.Contains(out, "3 of 3 jobs") {
		t.Errorf("jobs ls --path said %q", out)
	}
	if out := ok(t, e.URL, "jobs", "ls", "--path", "elsewhere"); !strings.Contains(out, "0 of 0 jobs") {
		t.Errorf("jobs ls --path elsewhere said %q", out)
	}
	if code, _, errOut := casparian(t, nil, "--server", e.URL, "jobs", "bulk", "delete"); code != exitUsage || !strings.Contains(errOut, "want retry or cancel") {
		t.Errorf("bulk delete: exit %d %s", code, errOut)
	}
}

// jobs ls (or list) sorts and pages by the cursor it prints; a bad sort is
// the server's 400.
func TestCLI_JobsListSortsAndPagesByCursor(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("nobody")
	fv := e.File("in/b.txt", "b\n")
	var ids []int64
	for _, p := range []int64{1, 9, 5} {
		ids = append(ids, e.Enqueue(fv, "nobody", p))
	}
	firstIDs := func(out string) []string {
		var got []string
		for _, line := range strings.Split(out, "\n")[1:] {
			if f := strings.Fields(line); len(f) > 2 && f[2] == "nobody" {
				got = append(got, f[0])
			}
		}
		return got
	}
	out := ok(t, e.URL, "jobs", "list", "--sort", "priority", "--limit", "2")
	m := regexp.MustCompile(`next page: --after (\S+)`).FindStringSubmatch(out)
	if got := firstIDs(out); fmt.Sprint(got) != fmt.Sprint([]int64{ids[1], ids[2]}) || m == nil ||
		!strings.Contains(out, "2 of 3 jobs (from offset 0), by priority desc") {
		t.Fatalf("jobs list --sort priority:\n%s", out)
	}
	out = ok(t, e.URL, "jobs", "ls", "--limit", "2", "--after", m[1])
	if got := firstIDs(out); fmt.Sprint(got) != fmt.Sprint([]int64{ids[0]}) || strings.Contains(out, "next page") {
		t.Errorf("jobs ls --after %s:\n%s", m[1], out)
	}
	out = ok(t, e.URL, "--json", "jobs", "ls", "--sort", "priority", "--order", "asc", "--limit", "1")
	var list struct {
		Jobs []struct {
			ID int64 `json:"id"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Jobs) != 1 || list.Jobs[0].ID != ids[0] ||
		!strings.Contains(out, `"next_cursor": "priority.a.1.`) || !strings.Contains(out, `"order": "asc"`) {
		t.Errorf("--json jobs ls --order asc: %v\n%s", err, out)
	}
	if code, _, errOut := casparian(t, nil, "--server", e.URL, "jobs", "ls", "--sort", "size"); code != exitError ||
		!strings.Contains(errOut, `unknown sort "size"`) {
		t.Errorf("--sort size: exit %d %s", code, errOut)
	}
}

// A prune counts first and deletes only with --yes; cancelled (SKIPPED)
// jobs go with the failed ones.
func TestCLI_PruneCountsThenDeletes(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	e.Plugin("nobody")
	fv := e.File("in/c.txt", "c\n")
	for range 2 {
		e.Enqueue(fv, "nobody", 0)
	}
	ok(t, e.URL, "jobs", "bulk", "cancel", "--plugin", "nobody", "--yes")
	// SQLite compares the end times by julianday, to the millisecond: a
	// prune within the cancel's millisecond would find them not older.
	time.Sleep(2 * time.Millisecond)
	if out := ok(t, e.URL, "jobs", "prune", "--failed-older-than", "1ns"); !strings.Contains(out,
		"0 COMPLETED and 2 FAILED or SKIPPED jobs would be deleted; run again with --yes") {
		t.Errorf("prune without --yes said %q", out)
	}
	if c := e.Counts(); c[job.StatusSkipped] != 2 {
		t.Errorf("the count-only prune changed jobs: %v", c)
	}
	if out := ok(t, e.URL, "jobs", "prune", "--failed-older-than", "1ns", "--yes"); !strings.Contains(out, "2 FAILED or SKIPPED jobs deleted") {
		t.Errorf("prune --yes said %q", out)
	}
	if c := e.Counts(); c[job.StatusSkipped] != 0 {
		t.Errorf("after prune --yes: %v", c)
	}
	if code, _, errOut := casparian(t, nil, "--server", e.URL, "jobs", "prune"); code != exitUsage || !strings.Contains(errOut, "--completed-older-than") {
		t.Errorf("prune without an age: exit %d %s", code, errOut)
	}
}

// workers drain shows in workers ls; undrain and disconnect say what they
// did; an unknown worker is the server's 404; --json prints the answer.
func TestCLI_WorkersDrainUndrainDisconnect(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	w := e.Worker(testworker.Options{Identity: "tw-ops"})
	e.WaitWorkers(1)
	if out := ok(t, e.URL, "workers", "drain", "tw-ops"); !strings.Contains(out, "worker tw-ops draining") {
		t.Errorf("drain said %q", out)
	}
	out := ok(t, e.URL, "workers", "list")
	if !regexp.MustCompile(`tw-ops .* draining `).MatchString(out) || !strings.Contains(out, "STATE") {
		t.Errorf("workers ls after the drain:\n%s", out)
	}
	if out := ok(t, e.URL, "--json", "workers", "undrain", "tw-ops"); !strings.Contains(out, `"action": "undrain"`) ||
		!strings.Contains(out, `"draining": false`) {
		t.Errorf("--json undrain said %q", out)
	}
	if out := ok(t, e.URL, "workers", "ls"); !regexp.MustCompile(`tw-ops .* active `).MatchString(out) {
		t.Errorf("workers ls after the undrain:\n%s", out)
	}
	n := w.Identifies()
	if out := ok(t, e.URL, "workers", "disconnect", "tw-ops"); !strings.Contains(out, "worker tw-ops disconnected") {
		t.Errorf("disconnect said %q", out)
	}
	testwait.Eventually(t, sentineltest.Within, "tw-ops identified again", func() bool { return w.Identifies() > n })
	code, _, errOut := casparian(t, nil, "--server", e.URL, "workers", "drain", "nobody")
	if code != exitError || !strings.Contains(errOut, "worker nobody is not connected") || !strings.Contains(errOut, "HTTP 404") {
		t.Errorf("drain nobody: exit %d %q", code, errOut)
	}
	if code, _, _ := casparian(t, nil, "--server", e.URL, "workers", "drain"); code != exitUsage {
		t.Errorf("drain without an id: exit %d", code)
	}
}

// environments ls (or list) shows each environment with the plugin
// versions that use it; --json prints the API's list.
func TestCLI_EnvironmentsList(t *testing.T) {
	t.Parallel()
	e := sentineltest.Start(t, nil)
	if out := ok(t, e.URL, "environments", "ls"); !strings.Contains(out, "0 environments") {
		t.Errorf("no environment: %q", out)
	}
	for _, m := range [][2]string{{"1.0", "env-a"}, {"2.0", "env-b"}} {
		if _, err := e.DB.PluginManifestActivate(context.Background(), "wasm", m[0], "src-"+m[0], m[1], "art-"+m[0]); err != nil {
			t.Fatal(err)
		}
	}
	out := ok(t, e.URL, "environments", "list")
	if !regexp.MustCompile(`(?m)^env-a .* wasm 1\.0 \(superseded\)\s*$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^env-b .* wasm 2\.0\s*$`).MatchString(out) || !strings.Contains(out, "2 environments") {
		t.Errorf("environments ls:\n%s", out)
	}
	if out := ok(t, e.URL, "--json", "environments", "ls"); !strings.Contains(out, `"hash": "env-b"`) || !strings.Contains(out, `"active_plugins": 1`) {
		t.Errorf("--json environments ls:\n%s", out)
	}
}
