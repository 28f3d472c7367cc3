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
