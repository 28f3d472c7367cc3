package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// seedFile inserts the rows a job refers to: plugins csv_parser and
// xml_parser and one file version (id 1).
func seedFile(t *testing.T, ctx context.Context, conn *pgx.Conn) {
	t.Helper()
	_, err := conn.Exec(ctx, `
		INSERT INTO cf_plugin_config (plugin_name, subscription_tags, default_parameters)
		VALUES ('csv_parser', 'csv', '{}'), ('xml_parser', 'xml', '{}');
		INSERT INTO cf_source_root (path, type, active) VALUES ('/data', 'local', 1);
		INSERT INTO cf_file_hash_registry (content_hash, size_bytes) VALUES ('h1', 1);
		INSERT INTO cf_file_location (source_root_id, rel_path, filename) VALUES (1, 'a.csv', 'a.csv');
		INSERT INTO cf_file_version (location_id, content_hash, size_bytes, modified_time)
		VALUES (1, 'h1', 1, now());`)
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
}

// notifications collects the payloads that arrive on conn within d, and
// when the first one did.
func notifications(ctx context.Context, conn *pgx.Conn, d time.Duration) ([]string, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var got []string
	var first time.Time
	for {
		n, err := conn.WaitForNotification(ctx)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return got, first, nil
		}
		if err != nil {
			return got, first, err
		}
		if n.Channel == QueueChannel {
			if first.IsZero() {
				first = time.Now()
			}
			got = append(got, n.Payload)
		}
	}
}

func TestQueueNotify_OnInsert(t *testing.T) {
	t.Parallel()
	_, url := openTest(t)
	ctx := testContext(t)
	writer := connect(t, url)
	seedFile(t, ctx, writer)

	const insert = `INSERT INTO cf_processing_queue (file_version_id, plugin_name, status, priority, retry_count)
		VALUES (1, $1, 'QUEUED', 0, 0)`
	for _, tc := range []struct {
		name  string
		write func(ctx context.Context, conn *pgx.Conn) error
		want  []string // payloads, in order
	}{
		{
			name: "OneJob",
			write: func(ctx context.Context, conn *pgx.Conn) error {
				_, err := conn.Exec(ctx, insert, "csv_parser")
				return err
			},
			want: []string{"csv_parser"},
		},
		{
			// Another tool's insert, with the columns it leaves NULL.
			name: "OriginalToolsInsert",
			write: func(ctx context.Context, conn *pgx.Conn) error {
				_, err := conn.Exec(ctx, `INSERT INTO cf_processing_queue (file_version_id, plugin_name) VALUES (1, 'xml_parser')`)
				return err
			},
			want: []string{"xml_parser"},
		},
		{
			// PostgreSQL folds identical notifications of one
			// transaction: a batch costs one per plugin.
			name: "BatchInOneTransaction",
			write: func(ctx context.Context, conn *pgx.Conn) error {
				return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					for i := range 500 {
						plugin := "csv_parser"
						if i%2 == 1 {
							plugin = "xml_parser"
						}
						if _, err := tx.Exec(ctx, insert, plugin); err != nil {
							return err
						}
					}
					return nil
				})
			},
			want: []string{"csv_parser", "xml_parser"},
		},
		{
			name: "RolledBack",
			write: func(ctx context.Context, conn *pgx.Conn) error {
				tx, err := conn.Begin(ctx)
				if err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, insert, "csv_parser"); err != nil {
					return err
				}
				return tx.Rollback(ctx)
			},
			want: nil,
		},
		{
			// A requeue or a conclusion is not an insert.
			name: "UpdateIsSilent",
			write: func(ctx context.Context, conn *pgx.Conn) error {
				_, err := conn.Exec(ctx, `UPDATE cf_processing_queue SET status = 'RUNNING' WHERE id = 1`)
				return err
			},
			want: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listener := connect(t, url)
			if _, err := listener.Exec(ctx, "LISTEN "+QueueChannel); err != nil {
				t.Fatal(err)
			}
			if err := tc.write(ctx, writer); err != nil {
				t.Fatalf("write: %v", err)
			}
			committed := time.Now()
			// The ones expected within 1 s, and nothing else.
			got, first, err := notifications(ctx, listener, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("notifications %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("notification %d: %q, want %q", i, got[i], tc.want[i])
				}
			}
			if !first.IsZero() {
				t.Logf("first notification %s after the commit", first.Sub(committed).Round(time.Microsecond))
			}
		})
	}
}

// waitDrain waits up to d for the listener to be ready and drains it.
func waitDrain(t *testing.T, l *Listener, d time.Duration) ([]string, bool) {
	t.Helper()
	select {
	case <-l.Ready():
	case <-time.After(d):
		t.Fatalf("listener not ready after %s", d)
	}
	return l.Drain()
}

func TestListener_DeliversAndResyncsAfterReconnect(t *testing.T) {
	t.Parallel()
	db, url := openTest(t)
	ctx := testContext(t)
	writer := connect(t, url)
	seedFile(t, ctx, writer)
	insert := func(plugin string) {
		t.Helper()
		if _, err := writer.Exec(ctx, `INSERT INTO cf_processing_queue (file_version_id, plugin_name, status)
			VALUES (1, $1, 'QUEUED')`, plugin); err != nil {
			t.Fatal(err)
		}
	}

	l := db.Listener()
	l.Start(ctx)
	defer l.Stop()
	if plugins, resync := waitDrain(t, l, 5*time.Second); !resync || len(plugins) != 0 {
		t.Fatalf("first Drain: %q, resync %v; want only resync", plugins, resync)
	}

	// Two plugins inserted quickly fold into one Drain (or arrive in
	// two); either way each is reported and nothing else.
	insert("csv_parser")
	insert("xml_parser")
	seen := map[string]bool{}
	for len(seen) < 2 {
		plugins, resync := waitDrain(t, l, time.Second)
		if resync {
			t.Errorf("resync without a reconnection")
		}
		for _, p := range plugins {
			seen[p] = true
		}
	}
	if !seen["csv_parser"] || !seen["xml_parser"] || len(seen) != 2 {
		t.Errorf("plugins %v", seen)
	}

	// The session dies: the listener reconnects, reports resync (what
	// was inserted meanwhile went unheard), and hears inserts again.
	pid := l.pid.Load()
	if _, err := connect(t, url).Exec(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "reconnected", func() bool {
		p := l.pid.Load()
		return p != 0 && p != pid
	})
	if _, resync := waitDrain(t, l, time.Second); !resync {
		t.Error("no resync after the reconnection")
	}
	if err := l.Err(); err != nil {
		t.Errorf("Err while listening: %v", err)
	}
	insert("csv_parser")
	if plugins, _ := waitDrain(t, l, time.Second); len(plugins) != 1 || plugins[0] != "csv_parser" {
		t.Errorf("after reconnecting: %q", plugins)
	}
}
