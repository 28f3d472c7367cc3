// Package pgtest gives tests a real PostgreSQL: a throwaway cluster that a
// test binary starts in TestMain and stops when its tests end, and an empty
// database per test.
//
// With CASPARIAN_TEST_POSTGRES set to a URL (postgres://user@host:port/db)
// the tests use that server instead, creating and dropping their databases
// on it; its user needs CREATEDB.
//
// Otherwise the cluster is made from the binaries of Debian's postgresql
// package (/usr/lib/postgresql/<version>/bin, newest version first, then
// $PATH): initdb into a temporary folder, pg_ctl start on a free port of
// 127.0.0.1 with its unix socket in the same folder. PostgreSQL refuses to
// run as root, so when the tests run as root the folder is given to the
// postgres user and both commands run as that user through runuser.
//
// Without PostgreSQL the tests that ask for a database are skipped, unless
// the environment variable CI is set: in CI a missing PostgreSQL is a
// failure.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable that points the tests at an
// existing server.
const EnvURL = "CASPARIAN_TEST_POSTGRES"

var (
	// adminURL reaches the server as a user that may create databases;
	// "" when none is available, and then unavailable says why.
	adminURL    string
	unavailable error
	running     *cluster
	databases   atomic.Int64

	templatesMu sync.Mutex
	templates   = map[string]*template{}
)

// Main starts the server (or finds the one EnvURL names), runs the tests,
// stops the server and returns m.Run's exit code:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	if u := os.Getenv(EnvURL); u != "" {
		adminURL = u
	} else {
		c, err := start()
		if err != nil {
			unavailable = err
			fmt.Fprintf(os.Stderr, "pgtest: no PostgreSQL: %v\n", err)
		} else {
			running = c
			adminURL = c.url
		}
	}
	code := m.Run()
	dropTemplates()
	if running != nil {
		if err := running.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}
	return code
}

// Database creates an empty database for t, drops it when t ends, and
// returns its URL. Without a server it skips t, or fails it when CI is set.
func Database(t testing.TB) string {
	t.Helper()
	requireServer(t)
	return create(t, "")
}

// Copy creates a database for t as a copy of the template named name, drops
// it when t ends, and returns its URL. The first Copy of a name in a test
// binary makes the template: an empty database that prepare fills (a test
// binary of a schema's users passes a function that opens the database
// through its package, migrating it, and closes it again). Copying a
// migrated database (CREATE DATABASE … TEMPLATE) takes a fraction of
// running every migration again, which is most of a test's time on
// PostgreSQL. prepare must leave no session open on the database: a
// template in use cannot be copied. Tests of migrating itself use Database.
func Copy(t testing.TB, name string, prepare func(ctx context.Context, url string) error) string {
	t.Helper()
	requireServer(t)
	tmpl, err := templateFor(name, prepare)
	if err != nil {
		t.Fatalf("template database %s: %v", name, err)
	}
	return create(t, " TEMPLATE "+tmpl)
}

// template is a database made once per test binary for Copy.
type template struct {
	once sync.Once
	db   string // its name on the server
	err  error
}

// templateFor returns the server's name of the template name, making it
// on first use.
func templateFor(name string, prepare func(ctx context.Context, url string) error) (string, error) {
	templatesMu.Lock()
	tp := templates[name]
	if tp == nil {
		tp = &template{db: fmt.Sprintf("casparian_template_%d_%d", os.Getpid(), databases.Add(1))}
		templates[name] = tp
	}
	templatesMu.Unlock()
	tp.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if tp.err = admin(ctx, "CREATE DATABASE "+tp.db); tp.err != nil {
			return
		}
		u, err := databaseURL(tp.db)
		if err != nil {
			tp.err = err
			return
		}
		tp.err = prepare(ctx, u)
	})
	return tp.db, tp.err
}

// dropTemplates drops the templates Copy made, for a server that outlives
// the test binary (EnvURL); pgtest's own cluster goes as a whole.
func dropTemplates() {
	templatesMu.Lock()
	defer templatesMu.Unlock()
	if adminURL == "" || running != nil {
		return
	}
	for _, tp := range templates {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if err := admin(ctx, "DROP DATABASE IF EXISTS "+tp.db+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: drop template database: %v\n", err)
		}
		cancel()
	}
}

// create creates a database for t (CREATE DATABASE name with clause),
// drops it when t ends and returns its URL.
func create(t testing.TB, clause string) string {
	t.Helper()
	name := fmt.Sprintf("casparian_test_%d_%d", os.Getpid(), databases.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := admin(ctx, "CREATE DATABASE "+name+clause); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// FORCE ends sessions a failed test left open (PostgreSQL 13+).
		if err := admin(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	u, err := databaseURL(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// databaseURL is the URL of the server's database name.
func databaseURL(name string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", EnvURL, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// Exec runs statement on the database at url (one Database returned), for a
// test that plays another process or a broken clock.
func Exec(t testing.TB, url, statement string, args ...any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, statement, args...)
	return err
}

// requireServer skips t without a server, or fails it when CI is set.
func requireServer(t testing.TB) {
	t.Helper()
	if adminURL != "" {
		return
	}
	why := unavailable
	if why == nil {
		why = fmt.Errorf("pgtest.Main did not run (call it from TestMain)")
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("PostgreSQL is required in CI: %v", why)
	}
	t.Skipf("no PostgreSQL (set %s or install Debian's postgresql): %v", EnvURL, why)
}

// admin runs one statement on the server's admin connection.
func admin(ctx context.Context, stmt string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, stmt)
	// The statement's error is the one that matters; a failed goodbye
	// changes nothing on the server.
	_ = conn.Close(context.Background())
	return err
}

// cluster is a PostgreSQL server this process started.
type cluster struct {
	bin    string // folder of initdb, pg_ctl and postgres
	dir    string // temporary folder: data/, the socket and the log
	asUser string // "postgres" when the commands run through runuser
	url    string
	opts   string // the server's options (pg_ctl -o), for a restart
}

// start makes and starts a cluster, or says why it cannot.
func start() (*cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	c := &cluster{bin: bin}
	if os.Geteuid() == 0 {
		c.asUser = "postgres"
	}
	c.reapOrphans()
	c.dir, err = os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, err
	}
	// Who started it, for reapOrphans.
	if err := os.WriteFile(filepath.Join(c.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		c.discard()
		return nil, err
	}
	if c.asUser != "" {
		u, err := user.Lookup(c.asUser)
		if err != nil {
			c.discard()
			return nil, fmt.Errorf("running as root needs the %s user (Debian's postgresql package creates it): %w", c.asUser, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			c.discard()
			return nil, err
		}
	}
	data := filepath.Join(c.dir, "data")
	// trust: only this machine's loopback and the socket in our own
	// folder reach the server. --no-sync: a test cluster need not survive
	// a power cut.
	if out, err := c.run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--no-locale", "--no-sync"); err != nil {
		c.discard()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	// A port found free may be taken before the server binds it: try a
	// few.
	for range 3 {
		port, err := freePort()
		if err != nil {
			break
		}
		opts := strings.Join([]string{
			"-p", strconv.Itoa(port),
			"-k", c.dir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "max_connections=200",
		}, " ")
		c.opts = opts
		out, err := c.start()
		if err == nil {
			c.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
			return c, nil
		}
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		err = fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
		if !strings.Contains(string(log), "in use") {
			c.discard()
			return nil, err
		}
	}
	c.discard()
	return nil, fmt.Errorf("pg_ctl start: no free port")
}

// start starts the server of an initialised cluster with its options.
func (c *cluster) start() ([]byte, error) {
	return c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-l", filepath.Join(c.dir, "log"),
		"-o", c.opts, "-w", "-t", "60", "start")
}

// Stop stops the server pgtest started, as an operator's restart would
// (pg_ctl stop -m fast: every session is ended, the data kept), so that a
// test can watch its clients through an outage; Start starts it again on
// the same port. A test that calls them must not run in parallel with
// other tests of its binary that use the server. With EnvURL the server is
// not pgtest's to stop: t is skipped.
func Stop(t testing.TB) {
	t.Helper()
	c := restartable(t)
	if out, err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "fast", "-w", "-t", "60", "stop"); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// Start starts the server Stop stopped.
func Start(t testing.TB) {
	t.Helper()
	c := restartable(t)
	if out, err := c.start(); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// restartable returns the cluster pgtest started, or skips t.
func restartable(t testing.TB) *cluster {
	t.Helper()
	requireServer(t)
	if running == nil {
		t.Skipf("the server is %s's, not pgtest's: it cannot be stopped", EnvURL)
	}
	return running
}

const (
	dirPrefix = "casparian-pgtest-"
	ownerFile = "owner.pid"
)

// reapOrphans stops and removes the clusters of test binaries that died
// without stopping theirs (a test timeout panics past TestMain's cleanup),
// so that a machine running the tests over and over does not fill up with
// servers.
func (c *cluster) reapOrphans() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or still being made
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || !processGone(pid) {
			continue // its test binary still runs
		}
		orphan := &cluster{bin: c.bin, dir: dir, asUser: c.asUser}
		_ = orphan.stop()
	}
}

// discard removes the folder of a cluster that failed to start. Removing
// it is best effort: a leftover folder in the temporary directory harms no
// later run.
func (c *cluster) discard() { _ = os.RemoveAll(c.dir) }

// stop stops the server at once (the data is thrown away) and removes the
// folder.
func (c *cluster) stop() error {
	out, err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
	rmErr := os.RemoveAll(c.dir)
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	return rmErr
}

// run runs one of the cluster's binaries, as the postgres user when the
// tests run as root. pg_ctl start hands the server's output to the log
// file, so the command's own output ends when it does.
func (c *cluster) run(name string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.asUser != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.asUser, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

// findBin returns the folder holding initdb and pg_ctl: Debian's newest
// version, else the one on $PATH.
func findBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no initdb in /usr/lib/postgresql/*/bin or on $PATH")
}

// version is the major version in /usr/lib/postgresql/<version>/bin.
func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// freePort returns a TCP port of 127.0.0.1 nobody listened on a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
