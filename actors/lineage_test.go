package actors

import (
	"testing"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/transport"
)

// The memo answers what db.SinksHash says for every sequence of sinks: the
// same sinks again, other sinks, and the first ones back.
func TestSinksHashMemo_AnswersAsSinksHash(t *testing.T) {
	a := []transport.SinkConfig{{Topic: "output", URI: "parquet:///out/a.parquet", Mode: "append"}}
	b := []transport.SinkConfig{{Topic: "output", URI: "parquet:///out/b.parquet", Mode: "append"}}
	aCopy := []transport.SinkConfig{a[0]}
	two := append([]transport.SinkConfig{{Topic: "errors", URI: "sqlite:///out/e.db/t", Mode: "replace"}}, a...)
	var memo sinksHashMemo
	for i, sinks := range [][]transport.SinkConfig{a, aCopy, b, a, two, nil, a} {
		want := db.SinksHash(dbSinks(sinks))
		if got := memo.hash(sinks); got != want {
			t.Fatalf("step %d: memo %s, SinksHash %s", i, got, want)
		}
	}
	if db.SinksHash(dbSinks(a)) == db.SinksHash(dbSinks(b)) {
		t.Fatal("different sinks hash alike: the test proves nothing")
	}
	j := &heldJob{artifactHash: "abc", sinks: b}
	if art, sum := lineageOf(j, &memo); art != "abc" || sum != db.SinksHash(dbSinks(b)) {
		t.Fatalf("lineageOf = %q, %q", art, sum)
	}
	if art, sum := lineageOf(&heldJob{sinks: b}, &memo); art != "" || sum != "" {
		t.Fatalf("an adopted job's lineage = %q, %q, want none", art, sum)
	}
}
