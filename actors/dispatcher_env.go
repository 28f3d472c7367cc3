package actors

import (
	"sort"
	"time"

	"github.com/casparian/sentinel/job"
)

// Environments, the dispatcher's side (docs/ARCHITECTURE.md, Environments;
// the messages in docs/PROTOCOL.md §5.4). The claim matches jobs by
// plugin; environments add two things to a worker's request:
//
//   - Prefer: the plugins whose environment the worker reported ready. The
//     claim takes those for every worker before any ordinary claim, so such
//     jobs go where no PREPARE_ENV is needed;
//   - Exclude: the plugins whose environment the worker failed to prepare,
//     until its avoid time passes, so a retry goes to another worker.
//
// Which plugin needs which environment is learned from the claims' DISPATCH
// payloads and from PluginDeployed. While no deployed environment is known
// (built-in plugins only), requests are exactly the plain ones.

// envView is what the dispatcher knows of one worker's environments.
type envView struct {
	ready map[string]bool
	avoid map[string]time.Time
}

// workerEnvs records a worker's environments.
func (a *dispatcherActor) workerEnvs(m *WorkerEnvs) bool {
	w, ok := a.workers[m.Worker]
	if !ok {
		return false
	}
	w.env.ready = make(map[string]bool, len(m.Ready))
	for _, e := range m.Ready {
		w.env.ready[e] = true
	}
	w.env.avoid = m.Avoid
	return true
}

// learnEnv records the environment a plugin's jobs need.
func (a *dispatcherActor) learnEnv(plugin, env string) {
	if env == "" || env == "system" {
		delete(a.envOf, plugin)
		return
	}
	a.envOf[plugin] = env
}

// request builds a worker's claim request for this round.
func (a *dispatcherActor) request(key string, w *slotView, now time.Time) job.ClaimRequest {
	req := job.ClaimRequest{Worker: key, Plugins: w.plugins, Limit: w.free}
	if len(a.envOf) == 0 || (len(w.env.ready) == 0 && len(w.env.avoid) == 0) {
		return req
	}
	for plugin, env := range a.envOf {
		if until, ok := w.env.avoid[env]; ok && now.Before(until) {
			req.Exclude = append(req.Exclude, plugin)
			continue
		}
		if w.env.ready[env] && runs(w.plugins, plugin) {
			req.Prefer = append(req.Prefer, plugin)
		}
	}
	sort.Strings(req.Exclude)
	sort.Strings(req.Prefer)
	return req
}

// runs reports whether a worker with these capabilities runs plugin.
func runs(capabilities []string, plugin string) bool {
	for _, c := range capabilities {
		if c == "*" || c == plugin {
			return true
		}
	}
	return false
}
