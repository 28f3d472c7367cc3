package actors

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// shadow answers the shadow run requests (issue #20 part 5). A promotion
// changes the plugin's ACTIVE manifest as a deploy does, so the
// dispatcher learns its environment and workers are told to reload; ending
// a run skipped its QUEUED shadow jobs, which the dispatcher need not hear.
func (a *queueActor) shadow(ctx actor.Context, dctx context.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case *ShadowRunsQuery:
		return a.deps.db.ShadowRuns(dctx, m.Plugin)
	case *CompareShadow:
		return a.deps.db.ShadowCompare(dctx, m.Plugin, m.BaseVersion, m.Version)
	case *EndShadow:
		res, err := a.deps.db.ShadowEnd(dctx, time.Now(), m.Plugin, m.Version, m.Promote)
		if err != nil {
			return nil, err
		}
		a.log.Info().Str("plugin", m.Plugin).Str("version", m.Version).Str("state", res.Run.State).
			Int64("cancelled", res.Cancelled).Int64("superseded", res.Superseded).Msg("shadow run ended by operator")
		if m.Promote {
			ctx.Send(a.peers.dispatcher, &PluginDeployed{Plugin: m.Plugin, EnvHash: res.EnvHash})
			ctx.Send(a.peers.supervisor, &BroadcastReload{})
		}
		return res, nil
	}
	return nil, nil
}
