package db

import (
	"strings"
	"testing"
)

// TestLineage_LookupsByVersionUseIndexes guards the lineage reads that
// start from a file version (a version's lineage, reuse at enqueue: once
// per queued job whose content another version has) against scanning the
// queue or the history: sentinel_lineage is a view over both, and a plan
// that materialises it would read every COMPLETED job.
func TestLineage_LookupsByVersionUseIndexes(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	for _, tc := range []struct {
		name string
		sql  string
		args []any
	}{
		{"Version", `SELECT ` + outputColumns + ` FROM sentinel_lineage o
			WHERE o.file_version_id IN (` + chainVersionsSQL + `) ORDER BY o.job_id, o.attempt, o.artifact_index`, []any{int64(1)}},
		{"ReuseCandidate", reuseCandidateSQL, []any{"[1,2]"}},
		{"ReuseSource", reuseSourceSQL, []any{"h", "a", "s", "p", int64(1)}},
		{"ReuseOwn", reuseOwnSQL, []any{int64(1), "p", "a"}},
		{"ReuseCopy", `SELECT * FROM sentinel_lineage WHERE file_version_id = ? AND job_id = ? AND attempt = ?`, []any{int64(1), int64(2), int64(1)}},
	} {
		plan := queryPlan(t, db, tc.name, tc.sql, tc.args...)
		for _, line := range plan {
			// SCAN of the views' co-routines reads what the searches
			// below them found; json_each reads one job's artifacts.
			if strings.HasPrefix(line, "SCAN sentinel_outputs") || strings.HasPrefix(line, "SCAN q") ||
				strings.HasPrefix(line, "SCAN cf_") || strings.Contains(line, "(status=?)") ||
				strings.Contains(line, "AUTOMATIC") {
				t.Errorf("%s scans: %q\nplan: %q", tc.name, line, plan)
			}
		}
	}
}
