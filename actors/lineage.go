package actors

import (
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/transport"
)

// lineageOf is what a completion of j records of the DISPATCH that ran it
// (issue #20): the manifest's artifact_hash and the hash of the resolved
// sinks (db.SinksHash), the reuse key's parts the database cannot know
// afterwards. Hashed only on success, so failures cost nothing. A job
// adopted after a restart knows neither ("", "").
func lineageOf(j *heldJob) (artifactHash, sinksHash string) {
	if j.artifactHash == "" {
		return "", ""
	}
	return j.artifactHash, db.SinksHash(dbSinks(j.sinks))
}

// dbSinks converts a DISPATCH's sinks back to the database's type.
func dbSinks(in []transport.SinkConfig) []db.Sink {
	out := make([]db.Sink, len(in))
	for i, s := range in {
		out[i] = db.Sink{Topic: s.Topic, URI: s.URI, Mode: s.Mode, SchemaDef: s.SchemaDef}
	}
	return out
}
