package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/casparian/sentinel/job"
)

// EnvironmentsList lists the plugin environments, the most recently used
// first, each with the manifests that name it, as package db's
// EnvironmentsList; one snapshot for both reads.
func (d *DB) EnvironmentsList(ctx context.Context) ([]job.Environment, error) {
	var envs []job.Environment
	users := map[string][]job.EnvironmentUser{}
	err := pgx.BeginTxFunc(ctx, d.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly},
		func(tx pgx.Tx) error {
			envs, users = nil, map[string][]job.EnvironmentUser{} // a retried transaction starts over
			rows, err := tx.Query(ctx, `SELECT hash, size_mb, length(lockfile_content), created_at, last_used
				FROM cf_plugin_environment ORDER BY COALESCE(last_used, created_at) DESC NULLS LAST, hash`)
			if err != nil {
				return err
			}
			for rows.Next() {
				var e job.Environment
				var size *float64
				var lockBytes *int64
				var created, used *time.Time
				if err := rows.Scan(&e.Hash, &size, &lockBytes, &created, &used); err != nil {
					rows.Close()
					return err
				}
				e.SizeMB, e.LockfileBytes, e.CreatedAt, e.LastUsed = deref(size), deref(lockBytes), utc(created), utc(used)
				envs = append(envs, e)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			rows, err = tx.Query(ctx, `SELECT env_hash, plugin_name, version, status::text FROM cf_plugin_manifest
				WHERE env_hash IS NOT NULL
				ORDER BY plugin_name, COALESCE(deployed_at, created_at) DESC NULLS LAST, id DESC`)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var hash, plugin, version, status *string
				if err := rows.Scan(&hash, &plugin, &version, &status); err != nil {
					return err
				}
				users[deref(hash)] = append(users[deref(hash)], job.EnvironmentUser{Plugin: deref(plugin), Version: deref(version), Status: deref(status)})
			}
			return rows.Err()
		})
	if err != nil {
		return nil, fmt.Errorf("list environments: %w", err)
	}
	job.AttachUsers(envs, users)
	return envs, nil
}
