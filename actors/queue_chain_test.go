package actors

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/casparian/sentinel/job"
)

// lookAtArtifact chains a file inside an active root, and refuses at once,
// without opening it, what is not a regular file (a FIFO would wait for a
// writer), a file outside every active root and an artifact that is no file.
func TestLookAtArtifact_OnlyRegularFilesInsideActiveRoots(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	inside, outside := filepath.Join(dir, "root"), filepath.Join(dir, "elsewhere")
	for _, d := range []string{inside, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path string) {
		if err := os.WriteFile(path, []byte("rows"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(inside, "out.parquet"))
	write(filepath.Join(outside, "out.parquet"))
	if err := syscall.Mkfifo(filepath.Join(inside, "fifo.parquet"), 0o644); err != nil {
		t.Fatal(err)
	}
	roots := []job.SourceRoot{{ID: 7, Path: inside, Active: true}, {ID: 8, Path: outside, Active: false}}
	look := func(uri string) job.ChainInput {
		done := make(chan job.ChainInput, 1)
		go func() {
			done <- lookAtArtifact(job.PendingChain{URI: uri, Producer: "csv", FileVersionID: 1}, roots)
		}()
		select {
		case in := <-done:
			return in
		case <-time.After(10 * time.Second):
			t.Fatalf("lookAtArtifact(%s) still waits after 10s", uri)
			return job.ChainInput{}
		}
	}
	if in := look("parquet://" + filepath.Join(inside, "out.parquet")); in.Refused != "" || in.RootID != 7 ||
		in.RelPath != "out.parquet" || in.Size != 4 || len(in.Hash) != 64 {
		t.Errorf("a file inside the active root: %+v", in)
	}
	for uri, want := range map[string]string{
		"parquet://" + filepath.Join(inside, "fifo.parquet"): job.ChainUnreadable,
		"parquet://" + filepath.Join(outside, "out.parquet"): job.ChainOutsideRoots, // its root is not active
		"sqlite://" + filepath.Join(inside, "x.db") + "/t":   job.ChainNotAFile,
	} {
		if in := look(uri); in.Refused != want {
			t.Errorf("%s: refused %q (%s), want %q", uri, in.Refused, in.Detail, want)
		}
	}
}
