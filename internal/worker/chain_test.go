package worker_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/internal/worker"
	"github.com/casparian/sentinel/job"
)

// Chaining by topic with the real worker and its real sinks: csv writes its
// Parquet output into a source root, checksum is subscribed to csv:output,
// gets a job for that Parquet file and hashes it; its row carries the
// chained file version, which the lineage leads back to the CSV file.
func TestChain_CSVParquetOutputRunsChecksum(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newSentinel(t, func(c *config.Config) { c.Lineage = true })
	h.Plugin("csv", "checksum")
	if err := os.MkdirAll(h.out, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := h.DB.SourceRootAdd(ctx, h.out); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Sentinel.SubscribeTopic(ctx, "checksum", "csv:output"); err != nil {
		t.Fatal(err)
	}
	startWorker(t, h, worker.Options{InputRoots: []string{h.Root, h.out}})

	fv := h.sample("orders.csv")
	up := h.EnqueueOverrides(fv, "csv", "")
	if j := h.WaitJob(up, job.StatusCompleted, job.StatusFailed); j.Status != job.StatusCompleted {
		t.Fatalf("csv job: %s: %s", j.Status, j.ErrorMessage)
	}
	parquetPath := filepath.Join(h.out, "output", "csv.parquet")

	var chained job.Info
	testwait.Eventually(t, within, "checksum's chained job completes", func() bool {
		page, err := h.DB.JobsList(ctx, job.Filter{Plugin: "checksum"})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Jobs) == 1 && page.Jobs[0].Status != job.StatusQueued && page.Jobs[0].Status != job.StatusRunning {
			chained = page.Jobs[0]
			return true
		}
		return false
	})
	if chained.Status != job.StatusCompleted || chained.FilePath != parquetPath {
		t.Fatalf("chained job: %s on %q (%s); want COMPLETED on %q", chained.Status, chained.FilePath, chained.ErrorMessage, parquetPath)
	}

	// checksum's row: the Parquet file's hash, and the lineage columns name
	// the chained job and the version standing for the Parquet file.
	b, err := os.ReadFile(parquetPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	rows, err := parquet.ReadFile[checksumRow](filepath.Join(h.out, "output", "checksum.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].SHA256 != hex.EncodeToString(sum[:]) || rows[0].Path != parquetPath ||
		rows[0].JobID != chained.ID || rows[0].FileVersionID != chained.FileVersionID {
		t.Fatalf("checksum rows %+v; want the hash of %s, job %d, version %d", rows, parquetPath, chained.ID, chained.FileVersionID)
	}

	// The CSV file's lineage lists both outputs; the chained one leads back.
	lin, err := h.Sentinel.FileLineage(ctx, fv)
	if err != nil {
		t.Fatal(err)
	}
	if len(lin) != 2 || lin[0].JobID != up || lin[1].JobID != chained.ID || lin[1].Chain == nil ||
		lin[1].Chain.OriginalVersionID != fv || lin[1].Chain.UpstreamJobID != up || lin[1].FileVersionID != rows[0].FileVersionID {
		t.Fatalf("lineage of the CSV file: %+v", lin)
	}
	prov, err := h.Sentinel.OutputProvenance(ctx, lin[1].URI)
	if err != nil || len(prov) != 1 || prov[0].Chain == nil || prov[0].Chain.OriginalVersionID != fv ||
		prov[0].Chain.OriginalPath != filepath.Join(h.Root, "orders.csv") {
		t.Fatalf("provenance of checksum's output: %+v, %v", prov, err)
	}
}

// checksumRow is a row of the checksum built-in's Parquet output.
type checksumRow struct {
	Path          string `parquet:"path"`
	SizeBytes     int64  `parquet:"size_bytes"`
	SHA256        string `parquet:"sha256"`
	JobID         int64  `parquet:"_job_id"`
	FileVersionID int64  `parquet:"_file_version_id"`
}
