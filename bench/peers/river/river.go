package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// noopArgs is the job River runs: no arguments, no work.
type noopArgs struct{}

func (noopArgs) Kind() string { return "peer_bench_noop" }

// noopWorker does nothing and counts the jobs it was handed, so that the
// bench knows when to start asking the database.
type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	done *atomic.Int64
}

func (w *noopWorker) Work(context.Context, *river.Job[noopArgs]) error {
	w.done.Add(1)
	return nil
}

// insertBatch is how many jobs one InsertManyFast call writes while
// seeding (before the clock starts).
const insertBatch = 10000

// runRiver runs one River measurement on a new database of the cluster:
// migrate, insert o.jobs no-op jobs, then time from Client.Start until the
// database holds o.jobs completed rows. The database is dropped afterwards.
func runRiver(ctx context.Context, c *cluster, o options, round int) (result, error) {
	name := fmt.Sprintf("river_bench_%d_%d", os.Getpid(), round)
	if err := adminExec(ctx, c, "CREATE DATABASE "+name); err != nil {
		return result{}, fmt.Errorf("river: create database: %w", err)
	}
	defer func() {
		// FORCE ends sessions a stopped client may have left open.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := adminExec(ctx, c, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "peer-bench: river: drop database %s: %v\n", name, err)
		}
	}()

	cfg, err := pgxpool.ParseConfig(c.url(name))
	if err != nil {
		return result{}, err
	}
	if o.riverConns > 0 {
		cfg.MaxConns = int32(o.riverConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return result{}, fmt.Errorf("river: connect: %w", err)
	}
	defer pool.Close()

	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return result{}, fmt.Errorf("river: migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return result{}, fmt.Errorf("river: migrate: %w", err)
	}

	var done atomic.Int64
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{done: &done})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Queues:        map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: o.riverWorkers}},
		Workers:       workers,
		FetchCooldown: o.riverCooldown, // 0 is River's default
	})
	if err != nil {
		return result{}, fmt.Errorf("river: client: %w", err)
	}

	// Seed before the clock starts.
	t0 := time.Now()
	batch := make([]river.InsertManyParams, 0, insertBatch)
	for left := o.jobs; left > 0; left -= len(batch) {
		batch = batch[:0]
		for range min(left, insertBatch) {
			batch = append(batch, river.InsertManyParams{Args: noopArgs{}})
		}
		if _, err := client.InsertManyFast(ctx, batch); err != nil {
			return result{}, fmt.Errorf("river: insert jobs: %w", err)
		}
	}
	seeded := time.Since(t0)

	pm, err := c.postmaster()
	if err != nil {
		return result{}, fmt.Errorf("river: find PostgreSQL's postmaster: %w", err)
	}
	// The seeding's garbage is collected now rather than on the clock.
	runtime.GC()
	store0, err := serverCPU(pm)
	if err != nil {
		return result{}, err
	}
	self0 := selfCPU()
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		return result{}, fmt.Errorf("river: start: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := client.Stop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "peer-bench: river: stop: %v\n", err)
		}
	}()

	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	// Every job was worked...
	for done.Load() < int64(o.jobs) {
		if err := runCtx.Err(); err != nil {
			return result{}, fmt.Errorf("river: %d of %d jobs worked: %w", done.Load(), o.jobs, err)
		}
		time.Sleep(5 * time.Millisecond) // polling a counter, not synchronising
	}
	// ...and the clock stops when the database says every one is
	// completed: River marks jobs completed in batches after Work returns.
	var completed int64
	for {
		err := pool.QueryRow(runCtx, "SELECT count(*) FROM river_job WHERE state = 'completed'").Scan(&completed)
		if err != nil {
			return result{}, fmt.Errorf("river: count completed jobs (%d of %d worked): %w", done.Load(), o.jobs, err)
		}
		if completed >= int64(o.jobs) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	self := selfCPU() - self0
	store1, err := serverCPU(pm)
	if err != nil {
		return result{}, err
	}

	// A lost or doubled job would show here.
	var total int64
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM river_job").Scan(&total); err != nil {
		return result{}, fmt.Errorf("river: count jobs: %w", err)
	}
	if total != int64(o.jobs) || completed != int64(o.jobs) || done.Load() != int64(o.jobs) {
		return result{}, fmt.Errorf("river: %d jobs inserted, %d rows, %d completed, %d worked", o.jobs, total, completed, done.Load())
	}
	return result{
		system:  "river",
		jobs:    o.jobs,
		elapsed: elapsed,
		store:   store1 - store0,
		workers: self,
		note:    fmt.Sprintf("%s, seeded in %.1fs", riverSettings(o), seeded.Seconds()),
	}, nil
}

// adminExec runs one statement on the cluster's postgres database.
func adminExec(ctx context.Context, c *cluster, stmt string) error {
	conn, err := pgx.Connect(ctx, c.url("postgres"))
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, stmt)
	// The statement's error is the one that matters: a failed goodbye
	// changes nothing on the server.
	_ = conn.Close(context.Background())
	return err
}

// riverSettings names how River was configured, for the figures.
func riverSettings(o options) string {
	s := fmt.Sprintf("MaxWorkers=%d", o.riverWorkers)
	if o.riverCooldown > 0 {
		s += fmt.Sprintf(" FetchCooldown=%s", o.riverCooldown)
	}
	if o.riverConns > 0 {
		s += fmt.Sprintf(" pool=%d", o.riverConns)
	}
	return s
}
