package db

import (
	"context"
	"database/sql"
	"reflect"
	"strings"
	"testing"

	"github.com/casparian/sentinel/job"
)

func TestParseOverrides(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     map[string][]Sink
		wantErr  string
	}{
		{name: "Empty", in: ""},
		{name: "Null", in: " null "},
		{name: "EmptyObject", in: "{}", want: map[string][]Sink{}},
		{name: "OneSink", in: `{"output": {"uri": "s3://b/o", "mode": "replace", "schema_def": "{\"a\":1}"}}`,
			want: map[string][]Sink{"output": {{Topic: "output", URI: "s3://b/o", Mode: "replace", SchemaDef: `{"a":1}`}}}},
		{name: "SchemaAsObject", in: `{"t": {"uri": "u", "schema_def": {"a": [1, 2]}}}`,
			want: map[string][]Sink{"t": {{Topic: "t", URI: "u", Mode: "append", SchemaDef: `{"a":[1,2]}`}}}},
		{name: "ListAndKeyWinsOverTopicField", in: `{"t": [{"topic": "other", "uri": "a"}, {"uri": "b", "mode": null}]}`,
			want: map[string][]Sink{"t": {{Topic: "t", URI: "a", Mode: "append"}, {Topic: "t", URI: "b", Mode: "append"}}}},
		{name: "RemovesTopic", in: `{"t": null, "u": []}`, want: map[string][]Sink{"t": {}, "u": {}}},
		{name: "UnknownFieldsIgnored", in: `{"t": {"uri": "a", "compression": "zstd"}}`,
			want: map[string][]Sink{"t": {{Topic: "t", URI: "a", Mode: "append"}}}},
		{name: "NotJSON", in: `{"t":`, wantErr: "invalid config_overrides"},
		{name: "NotAnObject", in: `[1]`, wantErr: "invalid config_overrides"},
		{name: "ScalarSink", in: `{"t": "s3://x"}`, wantErr: `topic "t": want a sink object`},
		{name: "MissingURI", in: `{"t": {"mode": "append"}}`, wantErr: "no uri"},
		{name: "BadMode", in: `{"t": {"uri": "a", "mode": "upsert"}}`, wantErr: `unknown mode "upsert"`},
		{name: "BadListItem", in: `{"t": [1]}`, wantErr: `topic "t"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOverrides(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMergeSinks(t *testing.T) {
	t.Parallel()
	a1 := Sink{Topic: "a", URI: "a1", Mode: "append"}
	a2 := Sink{Topic: "a", URI: "a2", Mode: "append"}
	b := Sink{Topic: "b", URI: "b", Mode: "replace"}
	out := Sink{Topic: "output", URI: "custom", Mode: "append"}
	def := Sink{Topic: "output", URI: "parquet://output/p.parquet", Mode: "append"}
	x := Sink{Topic: "x", URI: "x", Mode: "error"}
	tests := []struct {
		name       string
		configured []Sink
		overrides  map[string][]Sink
		want       []Sink
	}{
		{"NothingGetsDefaultOutput", nil, nil, []Sink{def}},
		{"ConfiguredOutputKept", []Sink{b, out}, nil, []Sink{b, out}},
		{"ReplaceInPlace", []Sink{a1, b, a2}, map[string][]Sink{"a": {x, x}}, []Sink{x, x, b, def}},
		{"RemoveTopic", []Sink{a1, b}, map[string][]Sink{"a": {}}, []Sink{b, def}},
		{"NewTopicsSorted", []Sink{b}, map[string][]Sink{"z": {x}, "c": {a1}}, []Sink{b, a1, x, def}},
		{"OverrideOutput", []Sink{a1}, map[string][]Sink{"output": {out}}, []Sink{a1, out}},
		{"RemovedOutputComesBack", []Sink{out}, map[string][]Sink{"output": nil}, []Sink{def}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeSinks("p", tt.configured, tt.overrides); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestJobsClaim_AssemblesDispatch(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, db)
	if _, err := db.PluginManifestActivate(ctx, "p", "1", "old", "env-old", "art-old"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PluginManifestActivate(ctx, "p", "2", "new", "env-new", "art-new"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TopicConfigAdd(ctx, "p", "output", "sqlite://out.db", "replace", `{"x":"int"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TopicConfigAdd(ctx, "p", "errors", "parquet://err.parquet", "", ""); err != nil {
		t.Fatal(err)
	}
	plain := enqueue(t, db, s.fv, "p", 2)
	overridden, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p", Priority: 1, ConfigOverrides: `{"output": {"uri": "s3://o"}}`})
	if err != nil {
		t.Fatal(err)
	}

	claims := claim(t, db, "w", 2, "p")
	want := Dispatch{
		PluginName: "p", FilePath: "/data/in/a.csv", FileVersionID: s.fv,
		EnvHash: "env-new", SourceCode: "new", ArtifactHash: "art-new",
		Sinks: []Sink{
			{Topic: "output", URI: "sqlite://out.db", Mode: "replace", SchemaDef: `{"x":"int"}`},
			{Topic: "errors", URI: "parquet://err.parquet", Mode: "append"},
		},
	}
	if claims[0].Ref.JobID != plain || !reflect.DeepEqual(claims[0].Dispatch, want) {
		t.Errorf("dispatch of %d:\n got %+v\nwant %+v", claims[0].Ref.JobID, claims[0].Dispatch, want)
	}
	want.Sinks = []Sink{{Topic: "output", URI: "s3://o", Mode: "append"}, want.Sinks[1]}
	if claims[1].Ref.JobID != overridden || !reflect.DeepEqual(claims[1].Dispatch, want) {
		t.Errorf("dispatch of %d:\n got %+v\nwant %+v", claims[1].Ref.JobID, claims[1].Dispatch, want)
	}
}

func TestJobsClaim_NewestActiveManifestWins(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	s := seedBasics(t, db)
	// Two ACTIVE rows, as a tool that does not supersede might leave them;
	// deployed_at in both stored forms.
	raw := rawOpen(t, db.Path())
	rawExec(t, raw,
		`INSERT INTO cf_plugin_manifest (plugin_name, version, source_code, source_hash, status, deployed_at) VALUES
			('p', '1', 'older', 'h1', 'ACTIVE', '2024-05-01 10:00:00'),
			('p', '2', 'newer', 'h2', 'ACTIVE', '2024-05-02T09:00:00.000000000Z'),
			('p', '3', 'staged', 'h3', 'STAGING', '2024-06-01T00:00:00.000000000Z')`)
	enqueue(t, db, s.fv, "p", 0)
	c := claim(t, db, "w", 1, "p")
	if len(c) != 1 || c[0].Dispatch.SourceCode != "newer" || c[0].Dispatch.EnvHash != "system" || c[0].Dispatch.ArtifactHash != "" {
		t.Errorf("claims = %+v", c)
	}
}

func TestExpandFilePlaceholders(t *testing.T) {
	t.Parallel()
	uri := "sqlite://o.db/{file_stem}|{file_name}"
	for in, want := range map[string]string{
		"/data/inbox/orders.csv":              "sqlite://o.db/orders|orders_csv",
		"/data/inbox/2026-01 orders.v2.csv":   "sqlite://o.db/2026_01_orders_v2|2026_01_orders_v2_csv",
		"/data/inbox/.env":                    "sqlite://o.db/_env|_env",
		"/data/inbox/README":                  "sqlite://o.db/README|README",
		"/data/inbox/sub/Überweisungen.jsonl": "sqlite://o.db/__berweisungen|__berweisungen_jsonl", // Ü is two bytes
	} {
		got := expandFilePlaceholders([]Sink{{Topic: "output", URI: uri}}, in)
		if got[0].URI != want {
			t.Errorf("%s: %q, want %q", in, got[0].URI, want)
		}
	}
	plain := []Sink{{Topic: "output", URI: "parquet://x.parquet"}}
	if got := expandFilePlaceholders(plain, "/a/b.csv"); &got[0] != &plain[0] {
		t.Error("sinks without placeholders were copied")
	}
}

func TestJobsClaim_ExpandsFilePlaceholdersInSinkURIs(t *testing.T) {
	t.Parallel()
	db := openTest(t)
	ctx := context.Background()
	s := seedBasics(t, db)
	if _, err := db.PluginManifestActivate(ctx, "p", "1", "src", "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TopicConfigAdd(ctx, "p", "output", "sqlite://output/all.db/{file_stem}", "replace", ""); err != nil {
		t.Fatal(err)
	}
	plain := enqueue(t, db, s.fv, "p", 2)
	overridden, err := db.JobEnqueue(ctx, job.Submission{FileVersionID: s.fv, Plugin: "p", Priority: 1, ConfigOverrides: `{"output": {"uri": "parquet://o/{file_stem}-{file_stem}.parquet"}}`})
	if err != nil {
		t.Fatal(err)
	}
	claims := claim(t, db, "w", 2, "p")
	got := map[int64]string{}
	for _, c := range claims {
		got[c.Ref.JobID] = c.Dispatch.Sinks[0].URI
	}
	want := map[int64]string{plain: "sqlite://output/all.db/a", overridden: "parquet://o/a-a.parquet"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("output URIs %v, want %v", got, want)
	}
	// The stored configuration keeps the placeholder.
	topics, err := db.reader.QueryContext(ctx, `SELECT uri FROM cf_topic_config`)
	if err != nil {
		t.Fatal(err)
	}
	defer topics.Close()
	for topics.Next() {
		var uri string
		if err := topics.Scan(&uri); err != nil || uri != "sqlite://output/all.db/{file_stem}" {
			t.Fatalf("stored uri %q (%v)", uri, err)
		}
	}
}

// TestLocatedPath: the claim statement's location is used only when it is
// complete and stays inside its root; anything else goes to the assembler's
// precise lookup ("" here).
func TestLocatedPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		location sql.NullString
		want     string
	}{
		{sql.NullString{String: "/data/in\x00a/b.csv", Valid: true}, "/data/in/a/b.csv"},
		{sql.NullString{String: "/data/in\x00/b.csv", Valid: true}, "/data/in/b.csv"},
		{sql.NullString{}, ""},                                        // a missing link
		{sql.NullString{String: "\x00b.csv", Valid: true}, ""},        // empty root
		{sql.NullString{String: "/data/in\x00", Valid: true}, ""},     // empty rel_path
		{sql.NullString{String: "/data/in\x00../x", Valid: true}, ""}, // leaves its root
		{sql.NullString{String: "/data/in", Valid: true}, ""},         // no separator
	} {
		if got := locatedPath(tc.location); got != tc.want {
			t.Errorf("locatedPath(%q) = %q, want %q", tc.location.String, got, tc.want)
		}
	}
}
