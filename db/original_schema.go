package db

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// originalTable is one cf_* table as the original Casparian's models create
// it (shared/original-schema.sql), and how migration 0006 carries the rows of
// our earlier layout into it.
type originalTable struct {
	name        string
	columns     []string // the original's column definitions, in order
	constraints []string // its table constraints
	indexes     []string // its CREATE INDEX statements
	ours        []string // our own indexes on the table (migrations 0002–0005, 0015)

	// fill replaces a copied column by an expression over the old row, for
	// original NOT NULL columns our layout left nullable.
	fill map[string]string
	// keep selects the rows that can be copied; the others go to the
	// backup table. "" keeps every row.
	keep string
	// legacy describes the layout 0001 invented for this table, if it did.
	legacy *legacyLayout
}

// legacyLayout is a table layout of ours that differs from the original's.
type legacyLayout struct {
	marker string            // a column only this layout has
	from   map[string]string // original column ← our column
	keep   string            // rows that map; "0" for none
}

// originalTables is the target of migration 0006, in the original's order.
// Never edit it to change the schema: add a migration.
var originalTables = []originalTable{
	{
		name: "cf_routing_rule",
		columns: []string{
			"id INTEGER NOT NULL",
			"pattern VARCHAR(500) NOT NULL",
			"tag VARCHAR(50) NOT NULL",
			"priority INTEGER",
		},
		constraints: []string{"PRIMARY KEY (id)"},
	},
	{
		name: "cf_plugin_config",
		columns: []string{
			"plugin_name VARCHAR(100) NOT NULL",
			"subscription_tags VARCHAR(1000)",
			"default_parameters TEXT",
			"last_updated DATETIME DEFAULT CURRENT_TIMESTAMP",
		},
		constraints: []string{"PRIMARY KEY (plugin_name)"},
	},
	{
		name: "cf_source_root",
		columns: []string{
			"id INTEGER NOT NULL",
			"path VARCHAR(1000) NOT NULL",
			"type VARCHAR(50)",
			"active INTEGER",
		},
		constraints: []string{"PRIMARY KEY (id)", "UNIQUE (path)"},
	},
	{
		name: "cf_file_hash_registry",
		columns: []string{
			"content_hash VARCHAR(64) NOT NULL",
			"first_seen DATETIME DEFAULT CURRENT_TIMESTAMP",
			"size_bytes INTEGER NOT NULL",
		},
		constraints: []string{"PRIMARY KEY (content_hash)"},
	},
	{
		name: "cf_file_location",
		columns: []string{
			"id INTEGER NOT NULL",
			"source_root_id INTEGER NOT NULL",
			"rel_path VARCHAR(850) NOT NULL",
			"filename VARCHAR(255) NOT NULL",
			"last_known_mtime FLOAT",
			"last_known_size INTEGER",
			"current_version_id INTEGER",
			"discovered_time DATETIME DEFAULT CURRENT_TIMESTAMP",
			"last_seen_time DATETIME DEFAULT CURRENT_TIMESTAMP",
		},
		constraints: []string{
			"PRIMARY KEY (id)",
			"FOREIGN KEY(source_root_id) REFERENCES cf_source_root (id)",
			"FOREIGN KEY(current_version_id) REFERENCES cf_file_version (id)",
		},
		indexes: []string{"CREATE INDEX ix_file_location_lookup ON cf_file_location (source_root_id, rel_path)"},
		fill: map[string]string{
			// The last element of rel_path: rtrim strips every trailing
			// character that is not a '/', leaving the directory part.
			"filename": "COALESCE(filename, substr(rel_path, length(rtrim(rel_path, replace(rel_path, '/', ''))) + 1))",
		},
	},
	{
		name: "cf_file_version",
		columns: []string{
			"id INTEGER NOT NULL",
			"location_id INTEGER NOT NULL",
			"content_hash VARCHAR(64) NOT NULL",
			"size_bytes INTEGER NOT NULL",
			"modified_time DATETIME NOT NULL",
			"detected_at DATETIME DEFAULT CURRENT_TIMESTAMP",
			"applied_tags VARCHAR(1000)",
		},
		constraints: []string{
			"PRIMARY KEY (id)",
			"FOREIGN KEY(location_id) REFERENCES cf_file_location (id)",
			"FOREIGN KEY(content_hash) REFERENCES cf_file_hash_registry (content_hash)",
		},
		indexes: []string{"CREATE INDEX ix_file_version_lookup ON cf_file_version (location_id, content_hash)"},
		// Reuse's lookup of the versions with the same content (0015).
		ours: []string{"CREATE INDEX ix_cf_file_version_content ON cf_file_version (content_hash)"},
		fill: map[string]string{
			"size_bytes": "COALESCE(size_bytes, (SELECT r.size_bytes FROM cf_file_hash_registry r " +
				"WHERE r.content_hash = cf_file_version.content_hash), 0)",
			"modified_time": "COALESCE(modified_time, detected_at, '1970-01-01 00:00:00')",
		},
	},
	{
		name: "cf_worker_node",
		columns: []string{
			"hostname VARCHAR(100) NOT NULL",
			"pid INTEGER NOT NULL",
			"ip_address VARCHAR(50)",
			"env_signature VARCHAR(100)",
			"started_at DATETIME DEFAULT CURRENT_TIMESTAMP",
			"last_heartbeat DATETIME DEFAULT CURRENT_TIMESTAMP",
			"status VARCHAR(50)",
			"current_job_id INTEGER",
		},
		constraints: []string{"PRIMARY KEY (hostname, pid)"},
	},
	{
		name: "cf_publisher",
		columns: []string{
			"id INTEGER NOT NULL",
			"azure_oid VARCHAR(36)",
			"name VARCHAR(255) NOT NULL",
			"email VARCHAR(255)",
			"created_at DATETIME DEFAULT CURRENT_TIMESTAMP",
			"last_active DATETIME DEFAULT CURRENT_TIMESTAMP",
		},
		constraints: []string{"PRIMARY KEY (id)", "UNIQUE (azure_oid)"},
		indexes:     []string{"CREATE INDEX ix_publisher_azure_oid ON cf_publisher (azure_oid)"},
	},
	{
		name: "cf_plugin_environment",
		columns: []string{
			"hash VARCHAR(64) NOT NULL",
			"lockfile_content TEXT NOT NULL",
			"size_mb FLOAT",
			"last_used DATETIME DEFAULT CURRENT_TIMESTAMP",
			"created_at DATETIME DEFAULT CURRENT_TIMESTAMP",
		},
		constraints: []string{"PRIMARY KEY (hash)"},
	},
	{
		name: "cf_library_whitelist",
		columns: []string{
			"id INTEGER NOT NULL",
			"library_name VARCHAR(100) NOT NULL",
			"version_constraint VARCHAR(50)",
			"description TEXT",
			"added_at DATETIME DEFAULT CURRENT_TIMESTAMP",
		},
		constraints: []string{"PRIMARY KEY (id)", "UNIQUE (library_name)"},
		legacy: &legacyLayout{
			marker: "library",
			from:   map[string]string{"library_name": "library", "version_constraint": "version"},
			keep:   "library IS NOT NULL",
		},
	},
	{
		name: "cf_ignore_rule",
		columns: []string{
			"id INTEGER NOT NULL",
			"source_root_id INTEGER",
			"pattern VARCHAR(500) NOT NULL",
			"active BOOLEAN",
			"created_at DATETIME DEFAULT CURRENT_TIMESTAMP",
		},
		constraints: []string{
			"PRIMARY KEY (id)",
			"FOREIGN KEY(source_root_id) REFERENCES cf_source_root (id)",
		},
	},
	{
		name: "cf_topic_config",
		columns: []string{
			"id INTEGER NOT NULL",
			"plugin_name VARCHAR(100) NOT NULL",
			"topic_name VARCHAR(100) NOT NULL",
			"uri VARCHAR(1000) NOT NULL",
			"mode VARCHAR(50)",
			"schema_json TEXT",
		},
		constraints: []string{
			"PRIMARY KEY (id)",
			"FOREIGN KEY(plugin_name) REFERENCES cf_plugin_config (plugin_name)",
		},
		indexes: []string{"CREATE INDEX ix_topic_lookup ON cf_topic_config (plugin_name, topic_name)"},
	},
	{
		name: "cf_file_tag",
		columns: []string{
			"file_id INTEGER NOT NULL",
			"tag VARCHAR(50) NOT NULL",
		},
		constraints: []string{
			"PRIMARY KEY (file_id, tag)",
			"FOREIGN KEY(file_id) REFERENCES cf_file_location (id)",
		},
		indexes: []string{"CREATE INDEX ix_cf_file_tag_tag ON cf_file_tag (tag)"},
	},
	{
		name: "cf_processing_queue",
		columns: []string{
			"id INTEGER NOT NULL",
			"file_version_id INTEGER NOT NULL",
			"plugin_name VARCHAR(100) NOT NULL",
			"config_overrides TEXT",
			"status VARCHAR(9)",
			"priority INTEGER",
			"worker_host VARCHAR(100)",
			"worker_pid INTEGER",
			"claim_time DATETIME",
			"end_time DATETIME",
			"result_summary TEXT",
			"error_message TEXT",
			"retry_count INTEGER",
		},
		constraints: []string{
			"PRIMARY KEY (id)",
			"FOREIGN KEY(file_version_id) REFERENCES cf_file_version (id)",
			"FOREIGN KEY(plugin_name) REFERENCES cf_plugin_config (plugin_name)",
		},
		indexes: []string{
			"CREATE INDEX ix_cf_processing_queue_priority ON cf_processing_queue (priority)",
			"CREATE INDEX ix_queue_pop ON cf_processing_queue (status, priority, id)",
			"CREATE INDEX ix_cf_processing_queue_status ON cf_processing_queue (status)",
		},
		// The claim path's indexes (see jobs.go); their reasons are in
		// migrations 0002, 0003, 0004, 0005 and 0010.
		ours: []string{
			"CREATE INDEX ix_cf_queue_nulls ON cf_processing_queue (id) " +
				"WHERE status IS NULL OR priority IS NULL OR retry_count IS NULL",
			"CREATE INDEX ix_cf_queue_plugin ON cf_processing_queue (plugin_name, id)",
			"CREATE INDEX ix_cf_queue_next_run ON cf_processing_queue (next_run_at) " +
				"WHERE status = 'QUEUED' AND next_run_at IS NOT NULL",
			"CREATE INDEX ix_cf_queue_claimable ON cf_processing_queue (plugin_name, priority DESC, id) WHERE status = 'QUEUED'",
			"CREATE INDEX ix_cf_queue_claimable_any ON cf_processing_queue (priority DESC, id) WHERE status = 'QUEUED'",
		},
		keep: "file_version_id IS NOT NULL",
	},
	{
		name: "cf_plugin_subscription",
		columns: []string{
			"id INTEGER NOT NULL",
			"plugin_name VARCHAR(100) NOT NULL",
			"topic_name VARCHAR(100) NOT NULL",
			"is_active BOOLEAN",
		},
		constraints: []string{
			"PRIMARY KEY (id)",
			"CONSTRAINT uq_plugin_topic_sub UNIQUE (plugin_name, topic_name)",
			"FOREIGN KEY(plugin_name) REFERENCES cf_plugin_config (plugin_name)",
		},
		indexes: []string{"CREATE INDEX ix_cf_plugin_subscription_topic_name ON cf_plugin_subscription (topic_name)"},
	},
	{
		name: "cf_plugin_manifest",
		columns: []string{
			"id INTEGER NOT NULL",
			"plugin_name VARCHAR(100) NOT NULL",
			"version VARCHAR(50) NOT NULL",
			"source_code TEXT NOT NULL",
			"source_hash VARCHAR(64) NOT NULL",
			"status VARCHAR(8)",
			"signature VARCHAR(128)",
			"validation_error TEXT",
			"created_at DATETIME DEFAULT CURRENT_TIMESTAMP",
			"deployed_at DATETIME",
			"env_hash VARCHAR(64)",
			"artifact_hash VARCHAR(64)",
			"publisher_id INTEGER",
			"system_requirements TEXT",
		},
		constraints: []string{
			"PRIMARY KEY (id)",
			"UNIQUE (source_hash)",
			"FOREIGN KEY(env_hash) REFERENCES cf_plugin_environment (hash)",
			"FOREIGN KEY(publisher_id) REFERENCES cf_publisher (id)",
		},
		indexes: []string{
			"CREATE INDEX ix_plugin_env_hash ON cf_plugin_manifest (env_hash)",
			"CREATE INDEX ix_plugin_active_lookup ON cf_plugin_manifest (plugin_name, status)",
			"CREATE INDEX ix_cf_plugin_manifest_plugin_name ON cf_plugin_manifest (plugin_name)",
			"CREATE INDEX ix_cf_plugin_manifest_status ON cf_plugin_manifest (status)",
		},
	},
	{
		name: "cf_surveyor_session",
		columns: []string{
			"id INTEGER NOT NULL",
			"source_root_id INTEGER NOT NULL",
			"current_phase VARCHAR(23)",
			"started_at DATETIME DEFAULT CURRENT_TIMESTAMP",
			"completed_at DATETIME",
			"error_message TEXT",
			"phase_data TEXT",
		},
		constraints: []string{
			"PRIMARY KEY (id)",
			"FOREIGN KEY(source_root_id) REFERENCES cf_source_root (id)",
		},
		indexes: []string{"CREATE INDEX ix_surveyor_session_lookup ON cf_surveyor_session (source_root_id, current_phase)"},
		legacy: &legacyLayout{
			marker: "summary",
			from:   map[string]string{"completed_at": "ended_at"},
			keep:   "source_root_id IS NOT NULL",
		},
	},
	{
		name: "cf_surveyor_decision",
		columns: []string{
			"id INTEGER NOT NULL",
			"session_id INTEGER NOT NULL",
			"phase VARCHAR(23) NOT NULL",
			"timestamp DATETIME DEFAULT CURRENT_TIMESTAMP",
			"decision_type VARCHAR(50) NOT NULL",
			"decision_data TEXT NOT NULL",
			"reasoning TEXT",
		},
		constraints: []string{
			"PRIMARY KEY (id)",
			"FOREIGN KEY(session_id) REFERENCES cf_surveyor_session (id)",
		},
		indexes: []string{"CREATE INDEX ix_surveyor_decision_lookup ON cf_surveyor_decision (session_id, phase)"},
		legacy: &legacyLayout{
			marker: "decided_at",
			keep:   "0",
		},
	},
}

// retiredIndexes are indexes of ours that 0006 drops because one of the
// original's serves the same lookups: ix_plugin_active_lookup has the
// columns of ix_cf_plugin_manifest_plugin_status, and ix_file_location_lookup
// leads with the column of ix_cf_file_location_root. (0001 had given the
// columns of the original's ix_queue_pop to the name of the original's
// ix_cf_processing_queue_status; both now are as the original's.)
var retiredIndexes = map[string]bool{
	"ix_cf_plugin_manifest_plugin_status": true,
	"ix_cf_file_location_root":            true,
}

// extraColumnsOf returns the nullable columns our migrations add to table,
// in the order they were added.
func extraColumnsOf(table string) []column {
	var cols []column
	for _, c := range extraColumns {
		if c.table == table {
			cols = append(cols, c)
		}
	}
	return cols
}

// columnName is the name a column definition declares.
func columnName(def string) string {
	name, _, _ := strings.Cut(def, " ")
	return name
}

// quoteIdent quotes an identifier read from the schema.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// rebuildOriginalSchema is migration 0006's Go part (its SQL file says what
// it does and what it keeps). It runs inside the migration's transaction
// with foreign keys off.
func rebuildOriginalSchema(ctx context.Context, tx *sql.Tx) error {
	var fk int
	if err := tx.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
		return err
	}
	if fk != 0 {
		return fmt.Errorf("rebuild: foreign keys are enforced; the rebuild needs them off")
	}

	// Views and triggers: none are ours, but another tool's could name a
	// table while it is missing mid-rebuild, which RENAME refuses. They are
	// dropped now and recreated as they were at the end.
	type object struct{ kind, name, sql string }
	var saved []object
	rows, err := tx.QueryContext(ctx, `SELECT type, name, sql FROM sqlite_master
		WHERE type IN ('view', 'trigger') AND sql IS NOT NULL ORDER BY type DESC, rowid`)
	if err != nil {
		return fmt.Errorf("rebuild: read views and triggers: %w", err)
	}
	for rows.Next() {
		var o object
		if err := rows.Scan(&o.kind, &o.name, &o.sql); err != nil {
			rows.Close()
			return fmt.Errorf("rebuild: read views and triggers: %w", err)
		}
		saved = append(saved, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("rebuild: read views and triggers: %w", err)
	}
	for _, o := range saved {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("DROP %s IF EXISTS %s", strings.ToUpper(o.kind), quoteIdent(o.name))); err != nil {
			return fmt.Errorf("rebuild: drop %s %s: %w", o.kind, o.name, err)
		}
	}

	lost := make(map[string]bool) // tables some rows did not go to
	for _, t := range originalTables {
		dropped, err := t.rebuild(ctx, tx)
		if err != nil {
			return fmt.Errorf("rebuild %s: %w", t.name, err)
		}
		lost[t.name] = dropped
	}

	// Views first (the ORDER BY above), so triggers that use them parse.
	for _, o := range saved {
		if _, err := tx.ExecContext(ctx, o.sql); err != nil {
			return fmt.Errorf("rebuild: recreate %s %s: %w", o.kind, o.name, err)
		}
	}

	// Step 10 of SQLite's procedure: the change must not break a foreign
	// key. Rows are copied unchanged, so a reference can only break if
	// its parent row was one the rebuild did not keep. References that
	// dangled before (other tools write without enforcement) stay as they
	// were, as Open promises.
	rows, err = tx.QueryContext(ctx, `PRAGMA foreign_key_check`)
	if err != nil {
		return fmt.Errorf("rebuild: foreign key check: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, parent string
		var rowid sql.NullInt64
		var fkid int
		if err := rows.Scan(&table, &rowid, &parent, &fkid); err != nil {
			return fmt.Errorf("rebuild: foreign key check: %w", err)
		}
		if lost[parent] {
			return fmt.Errorf("rebuild: %s row %d lost its %s parent", table, rowid.Int64, parent)
		}
	}
	return rows.Err()
}

// rebuild replaces the table by one of the original's layout holding the
// same rows, and reports whether some rows were moved to the backup table
// instead.
func (t originalTable) rebuild(ctx context.Context, tx *sql.Tx) (lost bool, err error) {
	oldCols, err := tableInfo(ctx, tx, t.name)
	if err != nil {
		return false, err
	}
	old := make(map[string]bool, len(oldCols))
	for _, c := range oldCols {
		old[strings.ToLower(c.name)] = true
	}
	legacy := t.legacy != nil && old[t.legacy.marker]

	// The new table: the original's columns, our extras, then any column
	// another tool added (kept, with its declared type and nothing else),
	// then the original's constraints.
	defs := append([]string(nil), t.columns...)
	var names []string // the original's and our columns, in order
	for _, d := range t.columns {
		names = append(names, columnName(d))
	}
	for _, c := range extraColumnsOf(t.name) {
		defs = append(defs, c.name+" "+c.decl)
		names = append(names, c.name)
	}
	target := make(map[string]bool, len(names))
	for _, n := range names {
		target[n] = true
	}
	var carried []string
	if !legacy {
		for _, c := range oldCols {
			if !target[strings.ToLower(c.name)] {
				defs = append(defs, strings.TrimSpace(quoteIdent(c.name)+" "+c.decl))
				carried = append(carried, c.name)
			}
		}
	}
	defs = append(defs, t.constraints...)
	newName := t.name + "_0006"
	create := fmt.Sprintf("CREATE TABLE %s (\n\t%s\n)", newName, strings.Join(defs, ", \n\t"))
	if _, err := tx.ExecContext(ctx, create); err != nil {
		return false, fmt.Errorf("create: %w", err)
	}
	if len(oldCols) == 0 { // not there at all: nothing to copy
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s RENAME TO %s", newName, t.name)); err != nil {
			return false, fmt.Errorf("rename: %w", err)
		}
		return false, t.createIndexes(ctx, tx, nil)
	}

	// Which columns are copied, from what.
	var into, from []string
	for _, name := range names {
		expr := ""
		switch {
		case legacy && t.legacy.from[name] != "":
			expr = t.legacy.from[name]
		case old[name] && t.fill[name] != "":
			expr = t.fill[name]
		case old[name]:
			expr = name
		}
		if expr != "" {
			into = append(into, name)
			from = append(from, expr)
		}
	}
	for _, c := range carried {
		into = append(into, quoteIdent(c))
		from = append(from, quoteIdent(c))
	}
	keep := t.keep
	if legacy {
		keep = t.legacy.keep
	}
	if keep == "" {
		keep = "1"
	}

	var total, kept int64
	if err := tx.QueryRowContext(ctx, fmt.Sprintf(
		"SELECT COUNT(*), COALESCE(SUM(CASE WHEN %s THEN 1 ELSE 0 END), 0) FROM %s", keep, t.name)).Scan(&total, &kept); err != nil {
		return false, fmt.Errorf("count rows: %w", err)
	}
	// Rows that do not map, and the whole of an invented layout, are
	// copied as they are to the backup table before anything changes.
	if kept < total || (legacy && total > 0) {
		which := fmt.Sprintf("NOT (%s)", keep)
		if legacy {
			which = "1"
		}
		backup := "backup_0006_" + t.name
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("CREATE TABLE %s AS SELECT * FROM %s WHERE %s", backup, t.name, which)); err != nil {
			return false, fmt.Errorf("backup: %w", err)
		}
	}
	res, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s WHERE %s",
		newName, strings.Join(into, ", "), strings.Join(from, ", "), t.name, keep))
	if err != nil {
		return false, fmt.Errorf("copy rows: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != kept {
		return false, fmt.Errorf("copy rows: copied %d of %d (%v)", n, kept, err)
	}

	// Indexes of other tools are recreated as they were.
	var others []string
	rows, err := tx.QueryContext(ctx, `SELECT name, sql FROM sqlite_master
		WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL`, t.name)
	if err != nil {
		return false, fmt.Errorf("read indexes: %w", err)
	}
	for rows.Next() {
		var name, stmt string
		if err := rows.Scan(&name, &stmt); err != nil {
			rows.Close()
			return false, fmt.Errorf("read indexes: %w", err)
		}
		if !retiredIndexes[name] && !t.hasIndex(name) {
			others = append(others, stmt)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("read indexes: %w", err)
	}

	if _, err := tx.ExecContext(ctx, "DROP TABLE "+t.name); err != nil {
		return false, fmt.Errorf("drop old table: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s RENAME TO %s", newName, t.name)); err != nil {
		return false, fmt.Errorf("rename: %w", err)
	}
	return kept < total, t.createIndexes(ctx, tx, others)
}

// createIndexes creates the original's indexes, ours, then others.
func (t originalTable) createIndexes(ctx context.Context, tx *sql.Tx, others []string) error {
	for _, group := range [][]string{t.indexes, t.ours, others} {
		for _, stmt := range group {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("create index: %w", err)
			}
		}
	}
	return nil
}

// hasIndex reports whether name is one of the table's target indexes.
func (t originalTable) hasIndex(name string) bool {
	for _, stmt := range append(append([]string(nil), t.indexes...), t.ours...) {
		if strings.HasPrefix(stmt, "CREATE INDEX "+name+" ") {
			return true
		}
	}
	return false
}

// columnInfo is one row of PRAGMA table_info.
type columnInfo struct {
	name, decl string
}

// tableInfo returns table's columns in order; none when it does not exist.
func tableInfo(ctx context.Context, tx *sql.Tx, table string) ([]columnInfo, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name, type FROM pragma_table_info(?) ORDER BY cid`, table)
	if err != nil {
		return nil, fmt.Errorf("table info %s: %w", table, err)
	}
	defer rows.Close()
	var cols []columnInfo
	for rows.Next() {
		var c columnInfo
		if err := rows.Scan(&c.name, &c.decl); err != nil {
			return nil, fmt.Errorf("table info %s: %w", table, err)
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}
