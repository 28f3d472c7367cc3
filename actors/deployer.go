package actors

import (
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/deploy"
	"github.com/casparian/sentinel/transport"
)

// deployerActor handles DEPLOY from publish tools: it verifies the hashes and
// the signature (internal/deploy), has the queue actor store the manifest,
// answers exactly one ACK or ERR, and after a change asks the supervisor to
// broadcast RELOAD and tells the dispatcher the plugin's new environment.
// It holds no state: a deploy in flight when it restarts gets no reply from
// this incarnation, but the tool times out and publishing again is
// idempotent.
type deployerActor struct {
	deps   deps
	peers  peers
	log    zerolog.Logger
	policy deploy.Policy
}

func newDeployerProps(d deps, p peers) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &deployerActor{deps: d, peers: p, log: d.log.With().Str("component", "deployer").Logger(),
			policy: deploy.Policy{Keys: d.keys, AllowUnsigned: d.cfg.AllowUnsigned}}
	})
}

func (a *deployerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *DeployReceived:
		a.receive(ctx, m)
	case *crash:
		panic("injected crash: deployer")
	}
}

func (a *deployerActor) receive(ctx actor.Context, m *DeployReceived) {
	d := m.Deploy
	log := a.log.With().Str("peer", m.From.Key).Str("plugin", d.PluginName).Str("version", d.Version).
		Str("publisher", d.PublisherName).Logger()
	verdict, err := deploy.Verify(d, a.policy)
	if err != nil {
		a.deps.stats.DeploysRejected.Add(1)
		log.Warn().Err(err).Msg("deploy refused")
		a.reply(ctx, m.From, nil, err.Error())
		return
	}
	if verdict.Unverified != "" {
		log.Warn().Str("reason", verdict.Unverified).Msg("deploy accepted WITHOUT a verified signature (--allow-unsigned)")
	}
	store := &StoreDeploy{Deployment: db.Deployment{
		Plugin: d.PluginName, Version: d.Version, SourceCode: d.SourceCode, Lockfile: d.LockfileContent,
		EnvHash: d.EnvHash, ArtifactHash: d.ArtifactHash, Signature: d.Signature,
		PublisherName: d.PublisherName, PublisherEmail: d.PublisherEmail, AzureOID: d.AzureOID,
		SystemRequirements: d.SystemRequirements,
		Shadow:             d.Shadow, ShadowFiles: d.ShadowFiles,
	}}
	f := ctx.RequestFuture(a.peers.queue, store, 2*a.deps.cfg.DBTimeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		stored, ok := res.(*DeployStored)
		switch {
		case err != nil || !ok:
			err = fmt.Errorf("storing the deploy did not finish (%v); publish again, deploying is idempotent", err)
		case stored.Err != nil:
			err = stored.Err
		}
		if err != nil {
			a.deps.stats.DeploysRejected.Add(1)
			log.Warn().Err(err).Msg("deploy not stored")
			msg := "deploy failed: " + err.Error()
			var conflict *db.DeployConflict
			if errors.As(err, &conflict) {
				msg = "deploy rejected: " + conflict.Reason
			}
			a.reply(ctx, m.From, nil, msg)
			return
		}
		a.stored(ctx, m, verdict, stored.Result, log)
	})
}

func (a *deployerActor) stored(ctx actor.Context, m *DeployReceived, v deploy.Verdict, r db.DeployResult, log zerolog.Logger) {
	d := m.Deploy
	a.deps.stats.DeploysAccepted.Add(1)
	id := r.ManifestID
	var msg string
	switch r.Outcome {
	case db.DeployUnchanged:
		msg = fmt.Sprintf("%s v%s is already deployed; nothing changed", d.PluginName, d.Version)
	case db.DeployReactivated:
		msg = fmt.Sprintf("Reactivated %s v%s", d.PluginName, d.Version)
	case db.DeployShadowed:
		run := r.Shadow
		msg = fmt.Sprintf("Shadow-deployed %s v%s (shadow run %d): %d jobs over the files v%s completed; v%s stays ACTIVE. "+
			"Compare with `casparian plugins compare %s %s %s`, then promote or discard",
			d.PluginName, d.Version, run.ID, run.Jobs, run.BaseVersion, run.BaseVersion, d.PluginName, run.BaseVersion, d.Version)
	default:
		msg = fmt.Sprintf("Deployed %s v%s", d.PluginName, d.Version)
	}
	log.Info().Int64("manifest_id", id).Str("key", v.Key).Int64("superseded", r.Superseded).
		Str("artifact_hash", d.ArtifactHash).Str("env_hash", d.EnvHash).Msg(msg)
	a.reply(ctx, m.From, &id, msg)
	if r.Outcome == db.DeployUnchanged {
		return
	}
	if r.Outcome == db.DeployShadowed {
		// The ACTIVE manifest, and so the plugin's environment, is
		// unchanged; the shadow jobs become due later (db.ShadowDelay) and
		// the queue actor's poll finds them.
		ctx.Send(a.peers.supervisor, &BroadcastReload{})
		return
	}
	// DISPATCH assembly reads the manifest and topic configs in each claim
	// transaction, so there is no cache of them to refresh; the dispatcher
	// learns the plugin's environment, and workers are told to reload.
	ctx.Send(a.peers.dispatcher, &PluginDeployed{Plugin: d.PluginName, EnvHash: d.EnvHash})
	ctx.Send(a.peers.supervisor, &BroadcastReload{})
}

// reply sends the one answer a DEPLOY gets: ACK when id is set, else ERR.
func (a *deployerActor) reply(ctx actor.Context, to Peer, id *int64, msg string) {
	if id != nil {
		ctx.Send(a.peers.socket, &SendMessage{To: to, Op: transport.OpAck,
			Payload: &transport.Ack{Success: true, Message: msg, PluginID: id}})
		return
	}
	ctx.Send(a.peers.socket, &SendMessage{To: to, Op: transport.OpErr, Payload: &transport.Err{Message: msg}})
}
