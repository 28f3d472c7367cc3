package httpapi

import (
	"net/http"
	"strings"

	"github.com/casparian/sentinel/job"
)

// The shadow run routes (issue #20 part 5). A shadow run begins with a
// DEPLOY carrying "shadow": true (casparian publish --shadow).

// GET /api/v1/plugins/{name}/shadow: the plugin's shadow runs, newest first.
func (srv *Server) shadowRuns(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r); err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	runs, err := srv.s.ShadowRuns(ctx, r.PathValue("name"))
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, shadowRunsJSON{Plugin: r.PathValue("name"), Runs: runs})
}

// GET /api/v1/plugins/{name}/compare?base=V1&version=V2: the shadow run of
// V2 over V1 compared with what V1 wrote, per file version.
func (srv *Server) shadowCompare(w http.ResponseWriter, r *http.Request) {
	if err := onlyParams(r, "base", "version"); err != nil {
		srv.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	base, version := strings.TrimSpace(q.Get("base")), strings.TrimSpace(q.Get("version"))
	if base == "" || version == "" {
		srv.fail(w, r, badRequest("give both versions: ?base=V1&version=V2 (the shadow version)"))
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	c, err := srv.s.ShadowCompare(ctx, r.PathValue("name"), base, version)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// POST /api/v1/plugins/{name}/promote {"version": "V2"}: V2 becomes ACTIVE
// (the others SUPERSEDED) and its shadow run ends.
func (srv *Server) shadowPromote(w http.ResponseWriter, r *http.Request) { srv.shadowEnd(w, r, true) }

// POST /api/v1/plugins/{name}/discard {"version": "V2"}: the shadow run of
// V2 ends and the ACTIVE version stays.
func (srv *Server) shadowDiscard(w http.ResponseWriter, r *http.Request) { srv.shadowEnd(w, r, false) }

func (srv *Server) shadowEnd(w http.ResponseWriter, r *http.Request, promote bool) {
	var req shadowVersionRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	if strings.TrimSpace(req.Version) == "" {
		srv.fail(w, r, badRequest(`give the shadow version: {"version": "2.0.0"}`))
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	res, err := srv.s.ShadowEnd(ctx, r.PathValue("name"), req.Version, promote)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// shadowRunsJSON answers GET /api/v1/plugins/{name}/shadow. The shadow
// types carry their JSON names in package job (internal/api is a leaf).
type shadowRunsJSON struct {
	Plugin string          `json:"plugin"`
	Runs   []job.ShadowRun `json:"runs"`
}

// shadowVersionRequest is the body of promote and discard.
type shadowVersionRequest struct {
	Version string `json:"version"`
}
