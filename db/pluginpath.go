package db

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// The rules of per-plugin settings, backfills and reruns that do not depend
// on the database; SQLite (pluginsettings.go) and PostgreSQL
// (db/postgres/pluginsettings.go) keep their own SQL and call these.

// maxPluginRetries bounds a per-plugin max retries, as a sanity check on
// input: a job requeued this often is broken, not unlucky.
const maxPluginRetries = 1000

// CheckPluginName trims a plugin name and refuses an empty one
// (job.ErrInvalid).
func CheckPluginName(plugin string) (string, error) {
	plugin = strings.TrimSpace(plugin)
	if plugin == "" {
		return "", fmt.Errorf("plugin name is required: %w", job.ErrInvalid)
	}
	return plugin, nil
}

// SettingsColumns are a sentinel_plugin_settings row's job_timeout_ms and
// max_retries; nil is NULL (the global setting).
type SettingsColumns struct {
	JobTimeoutMS *int64
	MaxRetries   *int64
	Reuse        *bool // migration 0011
}

// Apply returns the columns after the update u, or job.ErrInvalid for a
// value out of range. A negative field returns to the global setting.
func (c SettingsColumns) Apply(u job.PluginSettingsUpdate) (SettingsColumns, error) {
	if u.JobTimeout != nil {
		switch d := *u.JobTimeout; {
		case d < 0:
			c.JobTimeoutMS = nil
		case d > 0 && d < time.Millisecond:
			return c, fmt.Errorf("job timeout %s is below a millisecond: %w", d, job.ErrInvalid)
		default:
			ms := d.Milliseconds()
			c.JobTimeoutMS = &ms
		}
	}
	if u.Reuse != nil {
		switch n := *u.Reuse; {
		case n < 0:
			c.Reuse = nil
		case n > 1:
			return c, fmt.Errorf("reuse %d: want 1 (on), 0 (off) or -1 (default): %w", n, job.ErrInvalid)
		default:
			b := n == 1
			c.Reuse = &b
		}
	}
	if u.MaxRetries != nil {
		switch n := *u.MaxRetries; {
		case n < 0:
			c.MaxRetries = nil
		case n > maxPluginRetries:
			return c, fmt.Errorf("max retries %d is above %d: %w", n, maxPluginRetries, job.ErrInvalid)
		default:
			v := int64(n)
			c.MaxRetries = &v
		}
	}
	return c, nil
}

// PluginSettingsOf builds job.PluginSettings from a row's columns; paused
// and updated are zero when NULL.
func PluginSettingsOf(paused time.Time, c SettingsColumns, updated time.Time) job.PluginSettings {
	s := job.PluginSettings{PausedAt: paused, UpdatedAt: updated, Reuse: c.Reuse}
	if c.JobTimeoutMS != nil {
		d := time.Duration(*c.JobTimeoutMS) * time.Millisecond
		s.JobTimeout = &d
	}
	if c.MaxRetries != nil {
		n := int(*c.MaxRetries)
		s.MaxRetries = &n
	}
	return s
}

// ClaimTimeout is the job timeout a claim carries from its plugin's
// job_timeout_ms (Claim.JobTimeout): 0 for NULL (the global one), -1 for 0
// (no timeout).
func ClaimTimeout(ms *int64) time.Duration {
	switch {
	case ms == nil:
		return 0
	case *ms <= 0:
		return -1
	}
	return time.Duration(*ms) * time.Millisecond
}

// WithPluginRetries is c with the plugin's max_retries, when it has one,
// in place of the global MaxRetries the queue actor set.
func WithPluginRetries(c job.Conclusion, maxRetries *int64) job.Conclusion {
	if maxRetries != nil {
		c.MaxRetries = int(*maxRetries)
	}
	return c
}

// Settings records a sentinel_plugin_settings row.
func (c *PluginCatalogue) Settings(plugin string, s job.PluginSettings) {
	c.get(plugin).Settings = s
}

// BackfillFile is a current file version that has no job of a plugin yet:
// a backfill candidate. The caller decides which ones the plugin's
// subscriptions match, since the tags of the routing rules that match
// RelPath count as well as the version's applied_tags (a route added after
// the file was scanned never reached its applied_tags).
type BackfillFile struct {
	VersionID   int64
	RelPath     string
	AppliedTags string
	ModTime     time.Time
}

// PastJob is one job of a plugin as a rerun weighs it.
type PastJob struct {
	FileVersionID int64
	Status        string
	Priority      int64
	EndTime       time.Time // zero when NULL
}

// RerunPick returns, per file version, the job to run again: the versions
// with a COMPLETED job that ended before deployedAt (the ACTIVE manifest's
// deployment) and with no job since — none QUEUED, PENDING or RUNNING, none
// ended at or after deployedAt. So a second rerun picks nothing the first
// queued. The result maps version id to the priority of its latest such
// job.
func RerunPick(jobs []PastJob, deployedAt time.Time) map[int64]int64 {
	pick := map[int64]int64{}
	done := map[int64]bool{}
	for _, j := range jobs {
		switch {
		case j.Status == string(job.StatusQueued) || j.Status == string(job.StatusPending) ||
			j.Status == string(job.StatusRunning) || !j.EndTime.Before(deployedAt):
			done[j.FileVersionID] = true
		case j.Status == string(job.StatusCompleted) && !j.EndTime.IsZero():
			pick[j.FileVersionID] = j.Priority
		}
	}
	for v := range done {
		delete(pick, v)
	}
	return pick
}

// SortedVersions returns m's keys in increasing order, so that jobs are
// inserted in file version order.
func SortedVersions(m map[int64]int64) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// PausedPluginsSQL lists the paused plugins (both backends).
const PausedPluginsSQL = `SELECT plugin_name FROM sentinel_plugin_settings WHERE paused_at IS NOT NULL`

// WithoutPaused drops paused plugins from the named plugins (Plugins and
// Prefer) of claim requests, so that a worker that runs only paused
// plugins claims nothing without its claim statement walking their
// backlog row by row only to skip every row. A request for any plugin
// ("*") is left as it is: the claim statement's own test skips the paused
// plugins' jobs, and stays the guarantee when a pause commits between the
// read of paused and the claim. reqs is returned unchanged when nothing is
// paused.
func WithoutPaused(reqs []job.ClaimRequest, paused map[string]bool) []job.ClaimRequest {
	if len(paused) == 0 {
		return reqs
	}
	keep := func(names []string) []string {
		var out []string
		for _, n := range names {
			if !paused[n] {
				out = append(out, n)
			}
		}
		return out
	}
	out := make([]job.ClaimRequest, len(reqs))
	for i, r := range reqs {
		if _, anyPlugin := pluginFilter(r.Plugins); !anyPlugin {
			r.Plugins = keep(r.Plugins)
		}
		r.Prefer = keep(r.Prefer)
		out[i] = r
	}
	return out
}
