package db

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/casparian/sentinel/job"
)

func TestParseDSN(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		wantErr  string
	}{
		{in: "sqlite://casparian_flow.db", want: "casparian_flow.db"},
		{in: "sqlite://data/casparian_flow.db", want: "data/casparian_flow.db"},
		{in: "sqlite:///abs/x.db", want: "/abs/x.db"},
		{in: "SQLite:///abs/x.db", want: "/abs/x.db"},
		{in: "/abs/x.db", want: "/abs/x.db"},
		{in: "rel.db", want: "rel.db"},
		{in: "  rel.db ", want: "rel.db"},
		{in: "", wantErr: "empty"},
		{in: "   ", wantErr: "empty"},
		{in: "postgres://user@host/db", wantErr: `unsupported scheme "postgres"`},
		{in: "sqlite://", wantErr: "no database path"},
		{in: "sqlite:x.db", wantErr: "want sqlite://path"},
	}
	for _, tt := range tests {
		got, err := ParseDSN(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseDSN(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDSN(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestOpen_RejectsOtherSchemes(t *testing.T) {
	t.Parallel()
	if _, err := Open(context.Background(), "postgres://localhost/x"); err == nil {
		t.Fatal("Open accepted a postgres DSN")
	}
}

func TestOpen_SetsPragmasOnEveryConnection(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	check := func(name string, conn interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}) {
		t.Helper()
		for pragma, want := range map[string]string{
			"journal_mode": "wal",
			"synchronous":  "1", // NORMAL
			"foreign_keys": "1",
			"busy_timeout": "5000",
		} {
			var got string
			if err := conn.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatalf("%s: PRAGMA %s: %v", name, pragma, err)
			}
			if got != want {
				t.Errorf("%s: PRAGMA %s = %q, want %q", name, pragma, got, want)
			}
		}
	}
	check("writer", db.writer)
	check("reader", db.reader)
	db.versionMu.Lock()
	check("version", db.versionConn)
	db.versionMu.Unlock()

	// Readers cannot write, even by mistake.
	if _, err := db.reader.ExecContext(ctx, "DELETE FROM cf_processing_queue"); err == nil {
		t.Error("reader pool accepted a write")
	}
}

func TestOpen_PathWithURICharacters(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/odd?name#with%chars.db"
	db := openAt(t, path)
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	if _, err := db.SourceRootAdd(context.Background(), "/x"); err != nil {
		t.Fatal(err)
	}
	// The file was created under its literal name.
	raw := rawOpen(t, "file:"+strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path))
	var n int
	if err := raw.QueryRow("SELECT COUNT(*) FROM cf_source_root").Scan(&n); err != nil || n != 1 {
		t.Errorf("source roots = %d, %v; want 1", n, err)
	}
}

func TestDataVersion_ChangesAfterOtherConnectionCommits(t *testing.T) {
	path := testPath(t)
	db := openAt(t, path)
	other := openAt(t, path)
	ctx := context.Background()
	s := seedBasics(t, db, "p")

	v1, err := db.DataVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := db.DataVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again != v1 {
		t.Fatalf("data_version moved without a commit: %d -> %d", v1, again)
	}

	// Another process (here: another Open) inserts a job.
	if _, err := other.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p"}); err != nil {
		t.Fatal(err)
	}
	v2, err := db.DataVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v2 == v1 {
		t.Fatalf("data_version unchanged after another connection committed (%d)", v1)
	}

	// Our own writer is another connection too.
	enqueue(t, db, s.fv, "p", 0)
	v3, err := db.DataVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v3 == v2 {
		t.Fatalf("data_version unchanged after our writer committed (%d)", v2)
	}
}
