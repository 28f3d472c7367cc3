package db

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/casparian/sentinel/job"
)

// The rules of the rest of Store (sources, files, plugins, deploys and the
// bootstrap) that do not depend on the database: what an input must hold,
// how tags are stored, which plugin a scanned file queues a job for, when a
// deployment conflicts. SQLite (this package) and PostgreSQL (db/postgres)
// each keep their own SQL and call these, as they do the job path's rules
// (jobpath.go).

// SystemEnvHash is the env_hash a manifest without its own environment
// reports (NULL in cf_plugin_manifest).
const SystemEnvHash = systemEnvHash

// ValidTags reports the first tag that cannot be stored in a comma list, or
// an empty list; errors wrap job.ErrInvalid.
func ValidTags(tags []string) error { return validTags(tags) }

// TagList renders tags the way subscription_tags and applied_tags store
// them: sorted, without duplicates or blanks, comma separated.
func TagList(tags []string) string { return tagList(tags) }

// SplitTags reads a stored comma list of tags.
func SplitTags(list string) []string { return splitTags(list) }

// MergeTags adds tags to a stored comma list and returns the new list and
// whether it differs from the stored one (once normalised).
func MergeTags(current string, tags []string) (merged string, changed bool) {
	old := splitTags(current)
	merged = tagList(append(old, tags...))
	return merged, merged != tagList(old)
}

// CheckRoutingRule trims a routing rule's pattern and tag and refuses an
// empty pattern or a tag that cannot be stored; errors wrap job.ErrInvalid.
func CheckRoutingRule(pattern, tag string) (string, string, error) {
	pattern, tag = strings.TrimSpace(pattern), strings.TrimSpace(tag)
	if pattern == "" {
		return "", "", fmt.Errorf("add routing rule: pattern is required: %w", job.ErrInvalid)
	}
	if err := validTags([]string{tag}); err != nil {
		return "", "", fmt.Errorf("add routing rule: %w", err)
	}
	return pattern, tag, nil
}

// CleanSourceRoot returns a source root's path cleaned, so that "/data/in/"
// and "/data/in" name one root; a relative path is job.ErrInvalid.
func CleanSourceRoot(rootPath string) (string, error) {
	if !filepath.IsAbs(rootPath) {
		return "", fmt.Errorf("add source root: path %q must be absolute: %w", rootPath, job.ErrInvalid)
	}
	return filepath.Clean(rootPath), nil
}

// CheckIgnoreRule trims an ignore rule's pattern and refuses an empty one
// (job.ErrInvalid).
func CheckIgnoreRule(pattern string) (string, error) {
	if p := strings.TrimSpace(pattern); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("add ignore rule: pattern is required: %w", job.ErrInvalid)
}

// CheckScannedFiles refuses a batch of scanned files in which one lacks its
// root, relative path or hash, before anything is written.
func CheckScannedFiles(files []ScannedFile) error {
	for _, f := range files {
		if f.RootID == 0 || f.RelPath == "" || f.Hash == "" {
			return errors.New("record scanned files: empty root, rel path or hash")
		}
	}
	return nil
}

// ScanMTime is a modification time as last_known_mtime stores it: Unix
// seconds with a fraction.
func ScanMTime(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Subscription is one plugin's subscription_tags, read once per scan batch.
type Subscription struct {
	Plugin string
	tags   map[string]bool
}

// NewSubscription reads a plugin's stored subscription_tags.
func NewSubscription(plugin, tags string) Subscription {
	set := map[string]bool{}
	for _, t := range splitTags(tags) {
		set[t] = true
	}
	return Subscription{Plugin: plugin, tags: set}
}

// Matches reports whether a file version with these applied_tags (a stored
// comma list) gets a job for the subscription's plugin: some tag is shared.
func (s Subscription) Matches(appliedTags string) bool {
	return intersects(s.tags, splitTags(appliedTags))
}

// SourceHash is the source_hash of a manifest stored from source code alone
// (PluginManifestActivate, the bootstrap): the SHA-256 hex of the source.
func SourceHash(source string) string {
	sum := sha256.Sum256([]byte(source))
	return hex.EncodeToString(sum[:])
}

// CheckTopicConfig refuses a topic configuration without plugin, topic or
// URI.
func CheckTopicConfig(plugin, topic, uri string) error {
	if plugin == "" || topic == "" || uri == "" {
		return errors.New("add topic config: empty plugin, topic or uri")
	}
	return nil
}

// PluginCatalogue gathers what PluginsList returns from the rows a backend
// reads: configurations, then manifests newest first.
type PluginCatalogue struct{ byName map[string]*job.Plugin }

func (c *PluginCatalogue) get(name string) *job.Plugin {
	if c.byName == nil {
		c.byName = map[string]*job.Plugin{}
	}
	p, ok := c.byName[name]
	if !ok {
		p = &job.Plugin{Name: name}
		c.byName[name] = p
	}
	return p
}

// Config records a cf_plugin_config row.
func (c *PluginCatalogue) Config(plugin, subscriptionTags string) {
	c.get(plugin).SubscriptionTags = splitTags(subscriptionTags)
}

// Manifest records a cf_plugin_manifest row; rows must come newest first
// (the dispatch's order), so that the first ACTIVE one is the plugin's
// Active. An empty EnvHash reads as SystemEnvHash.
func (c *PluginCatalogue) Manifest(plugin string, m job.Manifest) {
	m.EnvHash = orDefault(m.EnvHash, systemEnvHash)
	p := c.get(plugin)
	p.Versions = append(p.Versions, m)
	if p.Active == nil && m.Status == "ACTIVE" {
		active := m
		p.Active = &active
	}
}

// Plugins returns the plugins by name.
func (c *PluginCatalogue) Plugins() []job.Plugin {
	out := make([]job.Plugin, 0, len(c.byName))
	for _, p := range c.byName {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CheckPluginSubscribe trims the plugin name and checks the tags of a
// PluginSubscribe call; errors wrap job.ErrInvalid.
func CheckPluginSubscribe(plugin string, tags []string) (string, error) {
	plugin = strings.TrimSpace(plugin)
	if plugin == "" {
		return "", fmt.Errorf("subscribe: plugin name is required: %w", job.ErrInvalid)
	}
	if err := validTags(tags); err != nil {
		return "", fmt.Errorf("subscribe %s: %w", plugin, err)
	}
	return plugin, nil
}

// Check refuses a deployment that lacks what PluginDeploy stores
// (job.ErrInvalid).
func (d Deployment) Check() error {
	if d.Plugin == "" || d.Version == "" || d.ArtifactHash == "" || d.EnvHash == "" || d.PublisherName == "" {
		return fmt.Errorf("deploy: plugin, version, hashes and publisher are required: %w", job.ErrInvalid)
	}
	return nil
}

// RequirementsJSON is system_requirements as stored: a JSON list, or nil
// (NULL) when the deployment names none.
func (d Deployment) RequirementsJSON() (*string, error) {
	if d.SystemRequirements == nil {
		return nil, nil
	}
	raw, err := json.Marshal(d.SystemRequirements)
	if err != nil {
		return nil, fmt.Errorf("system requirements: %w", err)
	}
	s := string(raw)
	return &s, nil
}

// StoredArtifact is the manifest already stored with a deployment's
// artifact (source_hash = ArtifactHash).
type StoredArtifact struct {
	ID                      int64
	Plugin, Version, Status string
}

// DeployOver decides what deploying d does where a stored manifest a holds
// its artifact: another plugin or version is a DeployConflict; an ACTIVE
// one makes the deploy DeployUnchanged (done, nothing to write); otherwise
// done is false and a is to be reactivated.
func DeployOver(d Deployment, a StoredArtifact) (res DeployResult, done bool, err error) {
	switch {
	case a.Plugin != d.Plugin || a.Version != d.Version:
		return DeployResult{}, false, &DeployConflict{Reason: fmt.Sprintf("this artifact is already stored as %s v%s (manifest %d)",
			a.Plugin, a.Version, a.ID)}
	case a.Status == "ACTIVE":
		return DeployResult{ManifestID: a.ID, Outcome: DeployUnchanged}, true, nil
	}
	return DeployResult{}, false, nil
}

// DeployVersionTaken is the refusal of new content under a plugin and
// version that manifest other already holds.
func DeployVersionTaken(d Deployment, other int64) error {
	return &DeployConflict{Reason: fmt.Sprintf("%s v%s is already stored with different content (manifest %d); publish it as a new version",
		d.Plugin, d.Version, other)}
}

// Check refuses a bootstrap that names a relative source root, a plugin
// without a name or a topic without topic or URI (job.ErrInvalid), before
// anything is written.
func (b Bootstrap) Check() error {
	for _, root := range b.SourceRoots {
		if !filepath.IsAbs(root) {
			return fmt.Errorf("bootstrap: source root %q must be absolute: %w", root, job.ErrInvalid)
		}
	}
	for _, p := range b.Plugins {
		if strings.TrimSpace(p.Name) == "" {
			return fmt.Errorf("bootstrap: plugin name is required: %w", job.ErrInvalid)
		}
		for _, s := range p.Topics {
			if s.Topic == "" || s.URI == "" {
				return fmt.Errorf("bootstrap: plugin %s: topic and uri are required: %w", p.Name, job.ErrInvalid)
			}
		}
	}
	return nil
}
