package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/casparian/sentinel/job"
)

// DispatchView assembles the DISPATCH of the job j with a (the rules of the
// claim, docs/PROTOCOL.md §4.2) and returns it as operators read it.
// manifestID is the manifest a shadow job runs (0 for other jobs).
func DispatchView(ctx context.Context, a *Assembler, j job.Job, manifestID int64) (*job.DispatchView, error) {
	d, reason, err := a.Dispatch(ctx, ClaimedJob{
		Ref:             job.Ref{JobID: j.ID},
		FileVersionID:   j.FileVersionID,
		HasFileVersion:  j.FileVersionID != 0,
		Plugin:          j.PluginName,
		Priority:        j.Priority,
		RetryCount:      j.RetryCount,
		ConfigOverrides: j.ConfigOverrides,
		ManifestID:      manifestID,
	})
	if err != nil {
		return nil, fmt.Errorf("dispatch of job %d: %w", j.ID, err)
	}
	v := &job.DispatchView{PluginName: d.PluginName, FilePath: d.FilePath, FileVersionID: d.FileVersionID,
		EnvHash: d.EnvHash, ArtifactHash: d.ArtifactHash, SourceBytes: len(d.SourceCode), Reason: reason}
	for _, s := range d.Sinks {
		v.Sinks = append(v.Sinks, job.DispatchSink{Topic: s.Topic, URI: s.URI, Mode: s.Mode, SchemaDef: s.SchemaDef})
	}
	return v, nil
}

// shadowJobSQL reads a shadow job's manifest (shadow.go).
const shadowJobSQL = `SELECT manifest_id FROM sentinel_shadow_jobs WHERE job_id = ?`

// jobDispatch assembles job j's DISPATCH in a read transaction. Its
// statements are prepared on the reader pool once (readerStmt), before the
// transaction, and bound to it: every claimed job runs them.
func (db *DB) jobDispatch(ctx context.Context, j job.Job) (*job.DispatchView, error) {
	src := &sqliteSource{}
	var shadowJob *sql.Stmt
	for _, b := range []struct {
		st **sql.Stmt
		q  string
	}{{&src.filePath, filePathSQL}, {&src.manifestOf, manifestSQL}, {&src.topicsOf, topicSinksSQL}, {&shadowJob, shadowJobSQL}} {
		st, err := db.readerStmt(ctx, b.q)
		if err != nil {
			return nil, fmt.Errorf("dispatch of job %d: %w", j.ID, err)
		}
		*b.st = st
	}
	tx, err := db.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("dispatch of job %d: %w", j.ID, err)
	}
	defer tx.Rollback() //nolint:errcheck // read only: nothing to keep
	src.tx = tx
	for _, st := range []**sql.Stmt{&src.filePath, &src.manifestOf, &src.topicsOf, &shadowJob} {
		*st = tx.StmtContext(ctx, *st) // closed with the transaction
	}
	// A shadow job's manifest (shadow.go); read here only, never per claim
	// unless a shadow run is RUNNING.
	var manifestID sql.NullInt64
	if err := shadowJob.QueryRowContext(ctx, j.ID).Scan(&manifestID); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("dispatch of job %d: %w", j.ID, err)
	}
	return DispatchView(ctx, NewAssembler(src, db.guard.sinkNamesDatabase), j, manifestID.Int64)
}
