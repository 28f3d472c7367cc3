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
