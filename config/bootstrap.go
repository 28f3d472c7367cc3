package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Bootstrap is the content of the --bootstrap file: what a fresh database
// needs so that files dropped into a source root are processed without an
// operator setting anything up (the docker-compose stack starts with one).
// The Sentinel applies it at every start, before it accepts workers; applying
// it only fills what is missing and never changes what exists, so a second
// start, or an operator's later changes, are left alone.
//
//	{
//	  "source_roots": ["/data/inbox"],
//	  "routes": [{"pattern": "*.csv", "tag": "csv"}],
//	  "plugins": [{
//	    "name": "csv",
//	    "manifest": {"version": "builtin", "source_code": "builtin:csv"},
//	    "subscribe": ["csv"],
//	    "topics": [{"topic": "output", "uri": "sqlite://output/casparian.db/{file_stem}", "mode": "replace"}]
//	  }]
//	}
type Bootstrap struct {
	// SourceRoots are absolute folders the scanner watches; a root that
	// exists (active or not) is left as it is.
	SourceRoots []string `json:"source_roots"`
	// Routes tag the files whose path matches a pattern (gitignore-style);
	// a rule with the same pattern and tag is not added twice.
	Routes []BootstrapRoute `json:"routes"`
	// Plugins are set up by name.
	Plugins []BootstrapPlugin `json:"plugins"`
}

// BootstrapRoute is one routing rule.
type BootstrapRoute struct {
	Pattern  string `json:"pattern"`
	Tag      string `json:"tag"`
	Priority int64  `json:"priority"`
}

// BootstrapPlugin is what one plugin gets.
type BootstrapPlugin struct {
	Name string `json:"name"`
	// Manifest, when given, becomes the plugin's ACTIVE manifest if the
	// plugin has none (built-in plugins of the sample worker ignore the
	// source, so "builtin:csv" is enough). A plugin that has an ACTIVE
	// manifest keeps it: a later deployment is never undone.
	Manifest *BootstrapManifest `json:"manifest"`
	// Subscribe are tags whose files get a job for this plugin; missing
	// ones are added to the plugin's subscriptions.
	Subscribe []string `json:"subscribe"`
	// Topics are output sinks, added for each topic the plugin has no sink
	// for yet.
	Topics []BootstrapTopic `json:"topics"`
}

// BootstrapManifest is a plugin version to activate.
type BootstrapManifest struct {
	Version    string `json:"version"`
	SourceCode string `json:"source_code"`
}

// BootstrapTopic is one output sink of a plugin. The URI may contain
// {file_stem} or {file_name}, expanded per job from the input file's name.
type BootstrapTopic struct {
	Topic string `json:"topic"`
	URI   string `json:"uri"`
	Mode  string `json:"mode"` // append (default), replace or error
}

// ReadBootstrap reads and validates a bootstrap file. Unknown keys are
// errors, so a misspelt key is not silently ignored.
func ReadBootstrap(path string) (Bootstrap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Bootstrap{}, fmt.Errorf("bootstrap file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var b Bootstrap
	if err := dec.Decode(&b); err != nil {
		return Bootstrap{}, fmt.Errorf("bootstrap file %s: %w", path, err)
	}
	if dec.More() {
		return Bootstrap{}, fmt.Errorf("bootstrap file %s: more than one JSON value", path)
	}
	if err := b.Validate(); err != nil {
		return Bootstrap{}, fmt.Errorf("bootstrap file %s: %w", path, err)
	}
	return b, nil
}

// Validate reports every invalid entry by where it is in the file.
func (b Bootstrap) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for i, r := range b.SourceRoots {
		if !filepath.IsAbs(r) {
			bad("source_roots[%d]: want an absolute path, got %q", i, r)
		}
	}
	for i, r := range b.Routes {
		if strings.TrimSpace(r.Pattern) == "" {
			bad("routes[%d]: pattern is required", i)
		}
		if err := validTag(r.Tag); err != nil {
			bad("routes[%d]: %v", i, err)
		}
	}
	seen := map[string]bool{}
	for i, p := range b.Plugins {
		name := strings.TrimSpace(p.Name)
		switch {
		case name == "":
			bad("plugins[%d]: name is required", i)
		case seen[name]:
			bad("plugins[%d]: plugin %q is listed twice", i, name)
		}
		seen[name] = true
		if p.Manifest != nil && strings.TrimSpace(p.Manifest.Version) == "" {
			bad("plugins[%d] (%s): manifest.version is required", i, name)
		}
		for _, tag := range p.Subscribe {
			if err := validTag(tag); err != nil {
				bad("plugins[%d] (%s): subscribe: %v", i, name, err)
			}
		}
		for j, tp := range p.Topics {
			if strings.TrimSpace(tp.Topic) == "" || strings.TrimSpace(tp.URI) == "" {
				bad("plugins[%d] (%s): topics[%d]: topic and uri are required", i, name, j)
			}
			switch tp.Mode {
			case "", "append", "replace", "error":
			default:
				bad("plugins[%d] (%s): topics[%d]: mode must be append, replace or error, got %q", i, name, j, tp.Mode)
			}
		}
	}
	return errors.Join(errs...)
}

// validTag rejects tags that cannot be stored in a comma-separated list.
func validTag(tag string) error {
	if t := strings.TrimSpace(tag); t == "" || strings.Contains(t, ",") {
		return fmt.Errorf("tag %q must be non-empty and contain no comma", tag)
	}
	return nil
}
