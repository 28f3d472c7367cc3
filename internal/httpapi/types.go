package httpapi

import (
	"encoding/json"
	"time"

	"github.com/casparian/sentinel/actors"
	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/job"
)

// The Sentinel's answers as the API's documents (internal/api).

func jobJSON(j job.Info) api.Job {
	out := api.Job{
		ID: j.ID, Status: string(j.Status), Plugin: j.PluginName, FileVersionID: j.FileVersionID,
		FilePath: j.FilePath, Priority: j.Priority, RetryCount: j.RetryCount, Attempt: j.Attempt,
		Worker: j.ClaimedBy, ClaimTime: timePtr(j.ClaimTime), EndTime: timePtr(j.EndTime),
		UpdatedAt: timePtr(j.UpdatedAt), ResultSummary: j.ResultSummary, ErrorMessage: j.ErrorMessage,
		Metrics: j.Metrics, Artifacts: j.Artifacts, CancelRequested: j.CancelRequested,
	}
	if j.ConfigOverrides != "" && json.Valid([]byte(j.ConfigOverrides)) {
		out.ConfigOverrides = json.RawMessage(j.ConfigOverrides)
	}
	if d := j.Dispatch; d != nil {
		out.Dispatch = &api.Dispatch{PluginName: d.PluginName, FilePath: d.FilePath, FileVersionID: d.FileVersionID,
			EnvHash: d.EnvHash, ArtifactHash: d.ArtifactHash, SourceBytes: d.SourceBytes, Sinks: []api.DispatchSink{},
			Reason: d.Reason}
		for _, s := range d.Sinks {
			out.Dispatch.Sinks = append(out.Dispatch.Sinks, api.DispatchSink{Topic: s.Topic, URI: s.URI, Mode: s.Mode, SchemaDef: s.SchemaDef})
		}
	}
	for _, a := range j.Attempts {
		out.Attempts = append(out.Attempts, api.Attempt{Attempt: a.Attempt, Worker: a.Worker, ClaimTime: timePtr(a.ClaimTime),
			EndTime: timePtr(a.EndTime), Outcome: a.Outcome, Message: a.Message})
	}
	return out
}

func workerJSON(w actors.WorkerInfo) api.Worker {
	running := w.Running
	if running == nil {
		running = []int64{}
	}
	caps := w.Capabilities
	if caps == nil {
		caps = []string{}
	}
	return api.Worker{ID: w.ID, Name: w.Name, Version: w.Version, Capabilities: caps, Slots: w.Slots,
		Busy: len(w.Running), RunningJobs: running, LastSeen: w.LastSeen.UTC(), Ready: w.Ready,
		KeyFingerprint: w.KeyFingerprint, Draining: w.Draining}
}

func manifestJSON(m job.Manifest) api.Manifest {
	return api.Manifest{ID: m.ID, Version: m.Version, Status: m.Status, EnvHash: m.EnvHash,
		ArtifactHash: m.ArtifactHash, DeployedAt: timePtr(m.DeployedAt)}
}

func pluginJSON(p job.Plugin) api.Plugin {
	out := api.Plugin{Name: p.Name, SubscriptionTags: p.SubscriptionTags, Versions: make([]api.Manifest, len(p.Versions))}
	if out.SubscriptionTags == nil {
		out.SubscriptionTags = []string{}
	}
	if p.Active != nil {
		m := manifestJSON(*p.Active)
		out.Active = &m
	}
	for i, m := range p.Versions {
		out.Versions[i] = manifestJSON(m)
	}
	return out
}

func sourceJSON(r job.SourceRoot) api.Source {
	return api.Source{ID: r.ID, Path: r.Path, Type: r.Type, Active: r.Active}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
