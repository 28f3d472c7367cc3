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
	Settings         PluginSettings
}

// PluginSettings are an operator's per-plugin settings (a
// sentinel_plugin_settings row); the zero value is a plugin without one.
type PluginSettings struct {
	// PausedAt is when the plugin was paused; zero while it runs. The
	// QUEUED jobs of a paused plugin are not claimed; RUNNING ones finish.
	PausedAt time.Time
	// JobTimeout overrides --job-timeout for the plugin's jobs: nil keeps
	// the global one, 0 turns the timeout off.
	JobTimeout *time.Duration
	// MaxRetries overrides --max-retries: nil keeps the global one.
	MaxRetries *int
	// Reuse turns reuse of earlier results (issue #20) on or off for the
	// plugin's new jobs: nil follows the default (on for deterministic
	// plugins: built-ins and WebAssembly).
	Reuse     *bool
	UpdatedAt time.Time
}

// Paused reports whether the plugin is paused.
func (s PluginSettings) Paused() bool { return !s.PausedAt.IsZero() }

// PluginSettingsUpdate changes a plugin's job timeout and max retries. A
// nil field is left as it is; a negative one returns to the global setting.
type PluginSettingsUpdate struct {
	JobTimeout *time.Duration
	MaxRetries *int
	// Reuse: 1 on, 0 off, negative back to the default.
	Reuse *int
}

// BackfillResult is what a backfill or a rerun of a plugin did, or with
// DryRun would do: Queued jobs (or Matched files, for a dry run).
type BackfillResult struct {
	Plugin string
	DryRun bool
	// Matched is how many file versions qualify; Queued how many jobs were
	// inserted (0 on a dry run).
	Matched, Queued int64
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

// Environment is one cf_plugin_environment row and the manifests that name
// it. LastUsed is when a deploy last named it (the Sentinel does not write
// it at dispatch); SizeMB is what the tool that built it recorded, 0 when
// none did.
type Environment struct {
	Hash              string
	SizeMB            float64
	LockfileBytes     int64
	CreatedAt         time.Time
	LastUsed          time.Time
	Manifests         []EnvironmentUser
	ActivePluginCount int
}

// EnvironmentUser is a manifest whose env_hash names an environment.
type EnvironmentUser struct {
	Plugin, Version, Status string
}

// AttachUsers sets each environment's Manifests from users (env_hash →
// manifests) and counts the ACTIVE ones: the plugins that use it now.
func AttachUsers(envs []Environment, users map[string][]EnvironmentUser) {
	for i := range envs {
		envs[i].Manifests = users[envs[i].Hash]
		envs[i].ActivePluginCount = 0
		for _, u := range envs[i].Manifests {
			if u.Status == "ACTIVE" {
				envs[i].ActivePluginCount++
			}
		}
	}
}
