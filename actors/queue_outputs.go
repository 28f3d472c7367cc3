package actors

import (
	"context"

	"github.com/casparian/sentinel/job"
)

// maxProvenance bounds the outputs a provenance query returns: a URI every
// job appends to (the default output sink) has one row per job.
const maxProvenance = 1000

// outputs answers an OutputsQuery (lineage, provenance or stale outputs).
func (a *queueActor) outputs(ctx context.Context, m *OutputsQuery) ([]job.Output, error) {
	switch {
	case m.Stale:
		return a.deps.db.OutputsStale(ctx, m.Plugin)
	case m.URI != "":
		return a.deps.db.OutputProvenance(ctx, m.URI, maxProvenance)
	}
	return a.deps.db.OutputsOfVersion(ctx, m.FileVersionID)
}
