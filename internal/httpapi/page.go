package httpapi

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/casparian/sentinel/actors"
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
	"lower": func(s actors.JobStatus) string {
		return strings.ToLower(string(s))
	},
}).Parse(statusHTML))

// pageData is what status.html renders.
type pageData struct {
	Now      time.Time
	Refresh  int // seconds
	Ready    bool
	Endpoint string
	Error    string // set when part of the page could not be read
	Counts   []statusCount
	Total    int64
	Workers  []actors.WorkerInfo
	Slots    int
	Busy     int
	Jobs     []actors.JobInfo
}

type statusCount struct {
	Status actors.JobStatus
	N      int64
}

// GET / renders the status page. Whatever can be read is shown; a part that
// fails is reported on the page rather than failing the whole of it.
func (srv *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := srv.ctx(r)
	defer cancel()
	d := pageData{Now: time.Now(), Refresh: int(pageRefresh / time.Second), Ready: srv.s.Ready(), Endpoint: srv.s.Endpoint()}
	var errs []string
	if counts, err := srv.s.Counts(ctx); err != nil {
		errs = append(errs, "job counts: "+err.Error())
	} else {
		for _, st := range actors.JobStatuses {
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
	if page, err := srv.s.Jobs(ctx, actors.JobFilter{Limit: recentJobs}); err != nil {
		errs = append(errs, "recent jobs: "+err.Error())
	} else {
		d.Jobs = page.Jobs
	}
	d.Error = strings.Join(errs, "; ")
	var buf bytes.Buffer
	if err := statusPage.Execute(&buf, d); err != nil {
		srv.fail(w, r, fmt.Errorf("render status page: %w", err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
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
