package actors

import (
	"sort"
	"time"
)

// Environments, the dispatcher's side (SPEC C.7). The claim itself matches
// jobs by plugin only; environments shape the requests:
//
//   - a worker that reported environments ready first gets a request limited
//     to the plugins whose environment it has, ahead of every other request,
//     so jobs go where no PREPARE_ENV is needed; the round after, it gets its
//     ordinary request (the two alternate while it has ready environments);
//   - a worker that failed to prepare an environment has that environment's
//     plugins excluded from its requests until the avoid time passes.
//
// Which plugin needs which environment is learned from the claims' DISPATCH
// payloads and from PluginDeployed. While no deployed environment is known
// (built-in plugins only), requests are exactly the plain ones.

// envView is what the dispatcher knows of one worker's environments.
type envView struct {
	ready       map[string]bool
	avoid       map[string]time.Time
	preferTried bool // the last request for this worker was the preferring one
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

// request builds a worker's claim request for this round; preferred says it
// is limited to the worker's ready environments and must run first.
func (a *dispatcherActor) request(key string, w *slotView, now time.Time) (req ClaimRequest, preferred bool) {
	req = ClaimRequest{Worker: key, Plugins: w.plugins, Limit: w.free}
	if len(a.envOf) == 0 {
		return req, false
	}
	var exclude, prefer []string
	for plugin, env := range a.envOf {
		if until, ok := w.env.avoid[env]; ok && now.Before(until) {
			exclude = append(exclude, plugin)
			continue
		}
		if w.env.ready[env] && runs(w.plugins, plugin) {
			prefer = append(prefer, plugin)
		}
	}
	sort.Strings(exclude)
	sort.Strings(prefer)
	if len(prefer) > 0 && !w.env.preferTried {
		w.env.preferTried = true
		return ClaimRequest{Worker: key, Plugins: prefer, Limit: w.free}, true
	}
	w.env.preferTried = false
	req.Exclude = exclude
	return req, false
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
