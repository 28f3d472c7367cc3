package job

import "time"

// The catalogue a job is made from, as operators see it: plugins and their
// manifests, source roots, routing rules.

// Manifest is one stored version of a plugin (a cf_plugin_manifest row),
// without its source.
type Manifest struct {
	ID                                     int64
	Version, Status, EnvHash, ArtifactHash string
	CreatedAt, DeployedAt                  time.Time
}

// BuiltinPlugins are the plugins the sample worker (casparian-worker) has
// built in, registered on a database by an ACTIVE manifest whose source is
// BuiltinSource(name) and whose version is BuiltinVersion.
var BuiltinPlugins = []string{"checksum", "csv", "jsonl", "text_stats"}

// BuiltinVersion is the version of a built-in plugin's manifest.
const BuiltinVersion = "builtin"

// BuiltinSource is the source_code of a built-in plugin's manifest, which
// the sample worker reads as "run your own plugin of this name".
func BuiltinSource(name string) string { return "builtin:" + name }

// Plugin is a plugin as operators see it: its subscriptions, the manifest a
// dispatch would use (the newest ACTIVE one), and every stored version.
type Plugin struct {
	Name             string
	SubscriptionTags []string
	Active           *Manifest  // nil: no ACTIVE manifest, its jobs cannot be dispatched
	Versions         []Manifest // newest first
}

// SourceRoot is a folder whose files the scanner records (a cf_source_root
// row).
type SourceRoot struct {
	ID     int64
	Path   string
	Type   string
	Active bool
}

// RoutingRule gives files whose path matches Pattern (gitignore-style) the
// tag Tag (a cf_routing_rule row).
type RoutingRule struct {
	ID       int64
	Pattern  string
	Tag      string
	Priority int64
}
