package actors

import (
	"errors"
	"time"

	"github.com/casparian/sentinel/job"
)

// The queue actor's handlers for deployments and environments. They live
// apart from queue.go only to keep that file about jobs; they run in the
// queue actor's mailbox like every other database call.

// storeDeploy writes a verified deployment (one transaction).
func (a *queueActor) storeDeploy(m *StoreDeploy) *DeployStored {
	dctx, cancel := a.dbctx()
	defer cancel()
	res, err := a.deps.db.PluginDeploy(dctx, time.Now(), m.Deployment)
	if err != nil && !requestFault(err) {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Str("plugin", m.Deployment.Plugin).Msg("storing a deploy failed")
	}
	return &DeployStored{Result: res, Err: err}
}

// environment reads the lockfile a PREPARE_ENV carries.
func (a *queueActor) environment(m *EnvironmentQuery) *Environment {
	dctx, cancel := a.dbctx()
	defer cancel()
	lock, err := a.deps.db.EnvironmentLockfile(dctx, m.Hash)
	if err != nil && !errors.Is(err, job.ErrNotFound) {
		a.deps.stats.DBErrors.Add(1)
		a.log.Error().Err(err).Str("env_hash", m.Hash).Msg("reading an environment failed")
	}
	return &Environment{Hash: m.Hash, Lockfile: lock, Err: err}
}
