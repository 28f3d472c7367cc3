package httpapi

import (
	"net/http"
	"strconv"

	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/job"
)

// The lineage routes (issue #20).

// GET /api/v1/files/{id}/lineage: what was made from file version {id} (a
// version, as jobs name them: an edited file is a new version with its own
// lineage), by which job, attempt and manifest.
func (srv *Server) fileLineage(w http.ResponseWriter, r *http.Request) {
	s := r.PathValue("id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		srv.fail(w, r, badRequest("file version id must be a positive whole number, got %q", s))
		return
	}
	if err := onlyParams(r); err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	outs, err := srv.s.FileLineage(ctx, id)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.Outputs{FileVersionID: id, Outputs: outputsJSON(outs)})
}

// GET /api/v1/artifacts/provenance?uri=parquet://…: where the outputs
// written to a sink URI came from, newest job first.
func (srv *Server) provenance(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r, "uri"); err != nil {
		srv.fail(w, r, err)
		return
	}
	uri := r.URL.Query().Get("uri")
	if uri == "" {
		srv.fail(w, r, badRequest("give the output's sink URI: ?uri=parquet://…"))
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	outs, err := srv.s.OutputProvenance(ctx, uri)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.Outputs{URI: uri, Outputs: outputsJSON(outs)})
}

// GET /api/v1/outputs/stale?plugin=p: outputs a newer file version or a
// newer ACTIVE manifest made stale, that no later job replaced.
func (srv *Server) staleOutputs(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r, "plugin"); err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	outs, err := srv.s.StaleOutputs(ctx, r.URL.Query().Get("plugin"))
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.Outputs{Outputs: outputsJSON(outs)})
}

// POST /api/v1/outputs/stale/rerun {"plugin": "p", "dry_run": true}: a job
// per stale current file version × plugin not already QUEUED or RUNNING.
func (srv *Server) rerunStale(w http.ResponseWriter, r *http.Request) {
	var req api.RerunStaleRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	res, err := srv.s.RerunStale(ctx, req.Plugin, req.DryRun)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.RerunStaleResult{Plugin: req.Plugin, Matched: res.Matched, Queued: res.Queued,
		Reused: res.Reused, DryRun: req.DryRun})
}

// onlyParams refuses query parameters other than names.
func onlyParams(r *http.Request, names ...string) error {
	for key := range r.URL.Query() {
		known := false
		for _, n := range names {
			known = known || key == n
		}
		if !known {
			return badRequest("unknown query parameter %q", key)
		}
	}
	return nil
}

func outputsJSON(outs []job.Output) []api.Output {
	out := make([]api.Output, len(outs))
	for i, o := range outs {
		out[i] = api.Output{JobID: o.JobID, Attempt: o.Attempt, FileVersionID: o.FileVersionID, FilePath: o.FilePath,
			ContentHash: o.ContentHash, Plugin: o.Plugin, ArtifactHash: o.ArtifactHash, Topic: o.Topic, URI: o.URI,
			Rows: o.Rows, Bytes: o.Bytes, ReusedFromJob: o.ReusedFromJob, CreatedAt: o.CreatedAt, Stale: o.Stale,
			StaleReason: o.StaleReason}
		if c := o.Chain; c != nil {
			out[i].Chain = &api.ChainOrigin{UpstreamJobID: c.UpstreamJobID, UpstreamAttempt: c.UpstreamAttempt,
				ArtifactIndex: c.ArtifactIndex, Producer: c.Producer, Topic: c.Topic, UpstreamVersionID: c.UpstreamVersionID,
				OriginalVersionID: c.OriginalVersionID, OriginalPath: c.OriginalPath}
		}
	}
	return out
}
