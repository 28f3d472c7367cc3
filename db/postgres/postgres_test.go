package postgres

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/casparian/sentinel/db/postgres/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testContext is bounded, so that a hung server fails a test instead of
// the whole binary's timeout.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openTest opens a new database with every migration applied.
func openTest(t *testing.T) (*DB, string) {
	t.Helper()
	url := migratedDatabase(t)
	db, err := Open(testContext(t), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(db.Close)
	return db, url
}

// openMigrating opens a new empty database, migrating it: for the tests
// of migrating itself.
func openMigrating(t *testing.T) (*DB, string) {
	t.Helper()
	url := pgtest.Database(t)
	db, err := Open(testContext(t), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(db.Close)
	return db, url
}

// migratedDatabase returns a new database with every migration applied: a
// copy of one that Open migrated once per test binary (pgtest.Copy).
func migratedDatabase(t testing.TB) string {
	t.Helper()
	return pgtest.Copy(t, "migrated", func(ctx context.Context, url string) error {
		db, err := Open(ctx, url)
		if err != nil {
			return err
		}
		db.Close()
		return nil
	})
}

// connect opens a plain connection to url, closed when t ends.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testContext(t), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// execFile runs a testdata SQL file on url.
func execFile(t *testing.T, url, name string) {
	t.Helper()
	body, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, url).Exec(testContext(t), string(body)); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// eventually waits until cond holds, failing t after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: still not %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIsURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dsn  string
		want bool
	}{
		{"postgres://u@h/db", true},
		{"postgresql://u@h:5433/db?sslmode=disable", true},
		{" POSTGRES://h/db", true},
		{"sqlite://x.db", false},
		{"/var/lib/casparian.db", false},
		{"postgres:x", false},
	} {
		if got := IsURL(tc.dsn); got != tc.want {
			t.Errorf("IsURL(%q) = %v, want %v", tc.dsn, got, tc.want)
		}
	}
}

func TestParseConfig_DefaultsAndOverrides(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		url           string
		maxConns      int32
		timeout       string
		connectTimout time.Duration
	}{
		{"Defaults", "postgres://u@h/db", defaultMaxConns, "30s", defaultConnectTimeout},
		{"URLWins", "postgres://u@h/db?pool_max_conns=3&statement_timeout=5s&connect_timeout=2", 3, "5s", 2 * time.Second},
		{"SeveralHosts", "postgres://u:pw@a:5432,b:5433/db?target_session_attrs=read-write", defaultMaxConns, "30s", defaultConnectTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxConns != tc.maxConns {
				t.Errorf("MaxConns = %d, want %d", cfg.MaxConns, tc.maxConns)
			}
			if got := cfg.ConnConfig.RuntimeParams["statement_timeout"]; got != tc.timeout {
				t.Errorf("statement_timeout = %q, want %q", got, tc.timeout)
			}
			if got := cfg.ConnConfig.ConnectTimeout; got != tc.connectTimout {
				t.Errorf("ConnectTimeout = %s, want %s", got, tc.connectTimout)
			}
			if got := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; got != "60s" {
				t.Errorf("idle_in_transaction_session_timeout = %q", got)
			}
		})
	}
	for _, bad := range []string{"sqlite://x.db", "postgres://u:secret@h:notaport/db", "postgres://u:secret@h/db?%zz"} {
		_, err := parseConfig(bad)
		if err == nil {
			t.Errorf("parseConfig(%q): no error", bad)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("parseConfig(%q): error shows the password: %v", bad, err)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:secret@h:5432/db?sslmode=disable", "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{"postgres://u:p@ss@a:1,b:2/db", "postgres://u:xxxxx@a:1,b:2/db"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgres://h/db", "postgres://h/db"},
		{"postgres://u:secret@h", "postgres://u:xxxxx@h"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestOpen_SessionsHaveTimeouts(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t)
	ctx := testContext(t)
	for name, want := range map[string]string{
		"statement_timeout":                   "30s",
		"lock_timeout":                        "10s",
		"idle_in_transaction_session_timeout": "1min",
		"application_name":                    applicationName,
	} {
		var got string
		if err := db.pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}
