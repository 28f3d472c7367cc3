package actors

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/confine"
	"github.com/casparian/sentinel/job"
)

// The queue actor's chain step (chaining by topic, issue #20 part 4). A
// completion whose artifacts some plugin subscribes to leaves a mark in the
// database, in its own transaction (db.BatchResult.Chained). The chain
// step then reads the marks (the queue actor), looks at each artifact's
// file off the mailbox (a goroutine: is it inside an ACTIVE source root,
// its SHA-256, size and time), and records the result (the queue actor,
// one transaction: file version, link, the subscribers' jobs, the mark
// deleted). The step runs after such a batch, at start (marks left by a
// crash or a stop), and again after a failure.

// chainRetryAfter is how long the chain step waits after a database error.
const chainRetryAfter = time.Second

// chainSoon runs the chain step now, or after the one in progress.
func (a *queueActor) chainSoon(ctx actor.Context) {
	if a.chainBusy {
		a.chainAgain = true
		return
	}
	ctx.Send(ctx.Self(), &chainStep{})
}

// chainStart reads the marked artifacts and has a goroutine look at them.
func (a *queueActor) chainStart(ctx actor.Context) {
	if a.chainBusy {
		a.chainAgain = true
		return
	}
	dctx, cancel := a.dbctx()
	work, err := a.deps.db.ChainsPending(dctx, db.ChainBatch)
	cancel()
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Msg("reading artifacts to chain failed; will retry")
		a.chainRetry.arm(ctx.ActorSystem(), ctx.Self(), Jitter(chainRetryAfter))
		return
	}
	if len(work.Pending) == 0 {
		return
	}
	a.chainBusy = true
	sys, self := ctx.ActorSystem(), ctx.Self()
	go func() {
		in := make([]job.ChainInput, len(work.Pending))
		for i, p := range work.Pending {
			in[i] = lookAtArtifact(p, work.Roots)
		}
		sys.Root.Send(self, &chainsLooked{Inputs: in})
	}()
}

// chainRecord records what the goroutine found, counts and logs it.
func (a *queueActor) chainRecord(ctx actor.Context, m *chainsLooked) {
	a.chainBusy = false
	dctx, cancel := a.dbctx()
	res, err := a.deps.db.ChainsRecord(dctx, time.Now(), m.Inputs)
	cancel()
	if err != nil {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Int("artifacts", len(m.Inputs)).Msg("recording chained jobs failed; will retry")
		a.chainRetry.arm(ctx.ActorSystem(), ctx.Self(), Jitter(chainRetryAfter))
		return
	}
	for _, in := range m.Inputs {
		if in.Refused == "" {
			continue
		}
		a.deps.stats.ChainRefused.Add(in.Refused)
		a.log.Warn().Int64("job_id", in.Pending.JobID).Int64("artifact_index", in.Pending.Index).Str("uri", in.Pending.URI).
			Str("reason", in.Refused).Str("detail", in.Detail).Msg("artifact not chained")
	}
	n := 0
	for plugin, ids := range res.Jobs {
		n += len(ids)
		a.deps.stats.JobsChained.Add(int64(len(ids)))
		a.log.Info().Str("plugin", plugin).Ints64("job_ids", ids).Msg("jobs chained on upstream artifacts")
	}
	if n > 0 {
		ctx.Send(a.peers.dispatcher, &QueueChanged{})
	}
	if a.chainAgain || len(m.Inputs) >= db.ChainBatch {
		a.chainAgain = false
		a.chainSoon(ctx)
	}
}

// lookAtArtifact decides whether an artifact's file may be chained and
// hashes it. Only files are chained (parquet://, file://; a sqlite:// URI
// names a table in a database many jobs share), and only inside an ACTIVE
// source root: chaining never lets a job read a path the Sentinel would
// not scan.
func lookAtArtifact(p job.PendingChain, roots []job.SourceRoot) job.ChainInput {
	in := job.ChainInput{Pending: p}
	refuse := func(reason, detail string) job.ChainInput {
		in.Refused, in.Detail = reason, detail
		return in
	}
	if p.FileVersionID == 0 || p.Producer == "" {
		return refuse(job.ChainUnreadable, "the upstream job is gone")
	}
	scheme, path, _, err := confine.SinkFile(p.URI)
	switch {
	case err != nil:
		return refuse(job.ChainNotAFile, err.Error())
	case scheme != "parquet" && scheme != "file":
		return refuse(job.ChainNotAFile, "a "+scheme+":// artifact is not a file of its own")
	case !filepath.IsAbs(path):
		return refuse(job.ChainOutsideRoots, "relative path "+path)
	}
	resolved, err := confine.Resolve(path)
	if err != nil {
		return refuse(job.ChainUnreadable, err.Error())
	}
	for _, r := range roots {
		root, err := confine.Resolve(r.Path)
		if err != nil || !r.Active || !confine.Under(resolved, root) {
			continue
		}
		rel, err := filepath.Rel(root, resolved)
		if err != nil || rel == "." || !filepath.IsLocal(rel) {
			continue
		}
		in.RootID, in.RelPath = r.ID, filepath.ToSlash(rel)
		break
	}
	if in.RootID == 0 {
		return refuse(job.ChainOutsideRoots, resolved+" is in no active source root")
	}
	hash, size, mod, err := hashArtifact(resolved)
	if err != nil {
		return refuse(job.ChainUnreadable, err.Error())
	}
	in.Hash, in.Size, in.ModTime = hash, size, mod
	return in
}

// hashArtifact returns a regular file's SHA-256 (hex), size and modification
// time, as the scanner records them.
func hashArtifact(path string) (string, int64, time.Time, error) {
	// Checked before opening too: opening a FIFO for reading waits for a
	// writer, which would hold the chain step.
	if st, err := os.Stat(path); err != nil {
		return "", 0, time.Time{}, err
	} else if !st.Mode().IsRegular() {
		return "", 0, time.Time{}, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", 0, time.Time{}, err
	}
	defer func() { _ = f.Close() }() // read only
	st, err := f.Stat()
	if err != nil {
		return "", 0, time.Time{}, err
	}
	if !st.Mode().IsRegular() {
		return "", 0, time.Time{}, fmt.Errorf("%s is not a regular file", path)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, time.Time{}, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, st.ModTime(), nil
}
