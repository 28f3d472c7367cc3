package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// cluster is the throwaway PostgreSQL server both systems run on: initdb
// into a temporary folder, pg_ctl start on a free port of 127.0.0.1 with its
// unix socket in that folder, pg_ctl stop and the folder removed at the end.
//
// PostgreSQL refuses to run as root: when this command runs as root, the
// folder is handed to the postgres user (Debian's postgresql package makes
// it) and initdb and pg_ctl run as that user through runuser.
type cluster struct {
	bin    string // folder of initdb, pg_ctl and postgres
	dir    string // temporary folder: data/, the socket and the log
	asUser string // "postgres" when the commands run through runuser
	port   int
	keep   bool // leave the folder behind (--keep)
}

// startCluster makes and starts a cluster. syncCommit sets PostgreSQL's
// synchronous_commit; fsync stays on either way.
func startCluster(syncCommit, keep bool) (*cluster, error) {
	bin, err := findPostgres()
	if err != nil {
		return nil, err
	}
	c := &cluster{bin: bin, keep: keep}
	if os.Geteuid() == 0 {
		c.asUser = "postgres"
	}
	if c.dir, err = os.MkdirTemp("", "peer-bench-pg-"); err != nil {
		return nil, err
	}
	if c.asUser != "" {
		u, err := user.Lookup(c.asUser)
		if err != nil {
			c.remove()
			return nil, fmt.Errorf("running as root needs the %s user to run PostgreSQL (Debian's postgresql package creates it): %w", c.asUser, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			c.remove()
			return nil, err
		}
	}
	if out, err := c.run("initdb", "-D", c.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--no-locale", "--no-sync"); err != nil {
		c.remove()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	sc := "off"
	if syncCommit {
		sc = "on"
	}
	// A port that was free a moment ago may be taken before the server
	// binds it: try a few.
	for range 3 {
		if c.port, err = freePort(); err != nil {
			break
		}
		opts := strings.Join([]string{
			"-p", strconv.Itoa(c.port),
			"-k", c.dir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "max_connections=300",
			"-c", "synchronous_commit=" + sc,
		}, " ")
		out, err := c.run("pg_ctl", "-D", c.data(), "-l", c.log(), "-o", opts, "-w", "-t", "60", "start")
		if err == nil {
			return c, nil
		}
		log, _ := os.ReadFile(c.log())
		err = fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
		if !strings.Contains(string(log), "in use") {
			c.remove()
			return nil, err
		}
	}
	c.remove()
	return nil, fmt.Errorf("pg_ctl start: no free port found")
}

func (c *cluster) data() string { return filepath.Join(c.dir, "data") }
func (c *cluster) log() string  { return filepath.Join(c.dir, "log") }

// url reaches database db as the cluster's superuser over TCP.
func (c *cluster) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// postmaster is the server's main process, from the first line of
// postmaster.pid in the data folder.
func (c *cluster) postmaster() (int, error) {
	raw, err := os.ReadFile(filepath.Join(c.data(), "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	return strconv.Atoi(strings.TrimSpace(first))
}

// stop stops the server at once (the data is thrown away) and removes its
// folder unless --keep.
func (c *cluster) stop() error {
	out, err := c.run("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "-t", "60", "stop")
	if err != nil {
		err = fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	if c.keep {
		fmt.Fprintf(os.Stderr, "peer-bench: kept the cluster's folder %s (stopped; its log is %s)\n", c.dir, c.log())
		return err
	}
	c.remove()
	return err
}

// remove deletes the cluster's folder; a leftover in the temporary
// directory costs disk, not figures.
func (c *cluster) remove() { _ = os.RemoveAll(c.dir) }

// run runs one of the cluster's binaries, as the postgres user when this
// command runs as root. It runs in a process group of its own, so that a
// Ctrl-C at the terminal reaches this command only, which then stops the
// server in order.
func (c *cluster) run(name string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.asUser != "" {
		cmd = exec.Command("runuser", append([]string{"-u", c.asUser, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd.CombinedOutput()
}

// findPostgres returns the folder holding initdb and pg_ctl: Debian's
// newest /usr/lib/postgresql/<version>/bin, else the one on $PATH.
func findPostgres() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	major := func(bin string) int { v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin))); return v }
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no PostgreSQL: no initdb in /usr/lib/postgresql/*/bin or on $PATH " +
		"(on Debian: apt-get update && apt-get install -y postgresql)")
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// freePort returns a TCP port of 127.0.0.1 that nobody listened on a
// moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
