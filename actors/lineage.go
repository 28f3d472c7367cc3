package actors

import (
	"slices"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/transport"
)

// lineageOf is what a completion of j records of the DISPATCH that ran it
// (issue #20): the manifest's artifact_hash and the hash of the resolved
// sinks (db.SinksHash), the reuse key's parts the database cannot know
// afterwards. Hashed only on success, so failures cost nothing. A job
// adopted after a restart knows neither ("", "").
func lineageOf(j *heldJob, memo *sinksHashMemo) (artifactHash, sinksHash string) {
	if j.artifactHash == "" {
		return "", ""
	}
	return j.artifactHash, memo.hash(j.sinks)
}

// sinksHashMemo remembers the last sinks a worker actor hashed: a worker's
// jobs of one plugin mostly share their sinks (no file placeholder), and a
// comparison of a few strings costs far less than the JSON and SHA-256 of
// db.SinksHash on every completion.
type sinksHashMemo struct {
	sinks []transport.SinkConfig
	sum   string
}

func (m *sinksHashMemo) hash(sinks []transport.SinkConfig) string {
	if m.sum != "" && slices.Equal(m.sinks, sinks) {
		return m.sum
	}
	m.sinks, m.sum = sinks, db.SinksHash(dbSinks(sinks))
	return m.sum
}

// dbSinks converts a DISPATCH's sinks back to the database's type.
func dbSinks(in []transport.SinkConfig) []db.Sink {
	out := make([]db.Sink, len(in))
	for i, s := range in {
		out[i] = db.Sink{Topic: s.Topic, URI: s.URI, Mode: s.Mode, SchemaDef: s.SchemaDef}
	}
	return out
}
