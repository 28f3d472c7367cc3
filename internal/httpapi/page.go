package httpapi

import (
	"bytes"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/job"
)

//go:embed status.html
var statusHTML string

// pageRefresh is how often the status page reloads itself.
const pageRefresh = 5 * time.Second

// recentJobs is how many jobs the status page lists.
const recentJobs = 25

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago":  ago,
	"join": strings.Join,
	"ids":  ids,
	"lower": func(s job.Status) string {
		return strings.ToLower(string(s))
	},
}).Parse(statusHTML))

// pageData is what status.html renders.
type pageData struct {
	Now     time.Time
	Refresh int // seconds
	// Tokens is true when the API wants tokens: the page then refreshes
	// itself with a script that sends the token, instead of a meta
	// refresh that could not.
	Tokens bool
	Nonce  string // of the page's one script (Content-Security-Policy)
	// Refused is why the token page is shown.
	Refused  string
	Ready    bool
	Endpoint string
	Error    string // set when part of the page could not be read
	Counts   []statusCount
	Total    int64
	Workers  []actors.WorkerInfo
	Slots    int
	Busy     int
	Jobs     []job.Info
}

type statusCount struct {
	Status job.Status
	N      int64
}

// GET / renders the status page. Whatever can be read is shown; a part that
// fails is reported on the page rather than failing the whole of it.
func (srv *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := srv.ctx(r)
	defer cancel()
	d := pageData{Now: time.Now(), Refresh: int(pageRefresh / time.Second), Tokens: srv.tokens != nil,
		Ready: srv.s.Ready(), Endpoint: srv.s.Endpoint()}
	var errs []string
	if counts, err := srv.s.Counts(ctx); err != nil {
		errs = append(errs, "job counts: "+err.Error())
	} else {
		for _, st := range job.Statuses {
			d.Counts = append(d.Counts, statusCount{Status: st, N: counts[st]})
			d.Total += counts[st]
		}
	}
	if workers, err := srv.s.WorkersInfo(ctx); err != nil {
		errs = append(errs, "workers: "+err.Error())
	} else {
		d.Workers = workers
		for _, wi := range workers {
			d.Slots += wi.Slots
			d.Busy += len(wi.Running)
		}
	}
	if page, err := srv.s.Jobs(ctx, job.Filter{Limit: recentJobs}); err != nil {
		errs = append(errs, "recent jobs: "+err.Error())
	} else {
		d.Jobs = page.Jobs
	}
	d.Error = strings.Join(errs, "; ")
	if err := renderPage(w, http.StatusOK, "status", &d); err != nil {
		srv.fail(w, r, fmt.Errorf("render status page: %w", err))
	}
}

// tokenPage answers a browser that opened the status page without a valid
// token: a 401 page whose script uses the token the tab keeps, or asks for
// one.
func (srv *Server) tokenPage(w http.ResponseWriter, code int, why string) {
	d := pageData{Refresh: int(pageRefresh / time.Second), Tokens: true, Refused: why}
	if err := renderPage(w, code, "token", &d); err != nil {
		srv.log.Error().Err(err).Msg("render token page")
		writeJSON(w, code, api.Error{Error: why})
	}
}

// renderPage writes one of the templates of status.html. The page's script
// runs under a Content-Security-Policy that allows it alone (by a nonce)
// and lets it fetch nothing but this server.
func renderPage(w http.ResponseWriter, code int, name string, d *pageData) error {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails
	// base64url: no '+' or '/', which the template would escape in the
	// attribute and leave unescaped in the header.
	d.Nonce = base64.RawURLEncoding.EncodeToString(nonce)
	var buf bytes.Buffer
	if err := statusPage.ExecuteTemplate(&buf, name, d); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-"+d.Nonce+"'; "+
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	// The page may have been opened with ?token=: no link may carry it
	// elsewhere.
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
	return nil
}

// ago renders how long ago t was, coarsely; "–" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

func ids(v []int64) string {
	s := make([]string, len(v))
	for i, id := range v {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}
