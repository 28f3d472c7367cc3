// Command casparian is the operator's command line for a running Casparian
// Sentinel. It talks to the Sentinel's HTTP API (casparian-sentinel --http),
// prints human tables by default and the API's JSON with --json.
//
//	casparian jobs ls [--status S] [--plugin P] [--path TEXT] [--error TEXT] [--sort id|priority|updated|ended] [--order asc|desc] [--limit N] [--after CURSOR | --offset N | --before ID]
//	casparian jobs bulk retry|cancel [--status S] [--plugin P] [--path TEXT] [--error TEXT] [--yes]
//	casparian jobs show ID
//	casparian jobs enqueue --plugin P (--file PATH | --file-version ID) [--priority N] [--config-overrides JSON]
//	casparian jobs cancel ID
//	casparian jobs retry ID
//	casparian workers ls
//	casparian workers drain ID | undrain ID | disconnect ID
//	casparian plugins ls
//	casparian environments ls
//	casparian plugins subscribe NAME TAG... | NAME PLUGIN:TOPIC
//	casparian plugins unsubscribe NAME PLUGIN:TOPIC | subscriptions NAME
//	casparian plugins add-builtin NAME [TAG...]
//	casparian plugins pause NAME | resume NAME
//	casparian plugins set NAME [--job-timeout D|default] [--max-retries N]
//	casparian plugins backfill NAME [--yes] | rerun NAME [--yes]
//	casparian sources ls | add PATH | rescan
//	casparian routes ls | add PATTERN TAG [--priority N]
//	casparian status
//	casparian token new
//	casparian keygen [--curve] [--out PREFIX] [--force]
//	casparian publish FILE --name N --version V --key K [--sentinel tcp://…] [--sentinel-key K --curve-secret-key F] [--lockfile F] [--publisher NAME] [--email E]
//	casparian --version
//
// Every command that calls the API sends --token (or CASPARIAN_TOKEN) as
// Authorization: Bearer, for a Sentinel started with --api-tokens.
// token new, keygen and publish do not use the HTTP API: publish sends a signed DEPLOY
// to the Sentinel's ZeroMQ endpoint as a DEALER, like any publish tool.
//
// Exit codes: 0 success, 1 error (including an unreachable Sentinel), 2 usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/casparian/sentinel/internal/buildinfo"
	"github.com/casparian/sentinel/job"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// defaultServer is where the CLI looks for the Sentinel's HTTP API when
// neither --server nor CASPARIAN_SERVER says otherwise.
const defaultServer = "http://127.0.0.1:8080"

// version is set by release builds: -ldflags "-X main.version=..."
// (docker/build.sh); --version prints it with the build information.
var version string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the flags every command accepts.
type options struct {
	server  string
	token   string
	json    bool
	timeout time.Duration
}

// command is one "group verb" of the CLI.
type command struct {
	usage string // arguments after "casparian group verb"
	help  string
	flags func(fs *flag.FlagSet) // the command's own flags, if any
	// minArgs and maxArgs bound the positional arguments (-1: no maximum).
	minArgs, maxArgs int
	run              func(ctx context.Context, c *cli, args []string) error
}

// cli is one invocation: the API client and where to write.
type cli struct {
	api    *client
	opts   options
	stdout io.Writer
	stderr io.Writer
	// values of the command's own flags, by name
	str  map[string]*string
	num  map[string]*int64
	flag map[string]*bool
	// getenv reads the environment (a map in tests).
	getenv func(string) string
}

var commands = map[string]map[string]*command{
	"jobs": {
		"ls": {usage: "[--status S] [--plugin P] [--path TEXT] [--error TEXT] [--sort KEY] [--order asc|desc] [--limit N] [--after CURSOR | --offset N | --before ID]",
			help: "list jobs, newest first, or sorted by priority, update or end time",
			flags: func(fs *flag.FlagSet) {
				jobFilterFlags(fs)
				fs.String("sort", "", "order by id (default), priority, updated or ended (jobs without an end time last)")
				fs.String("order", "", "desc (default: newest, highest, latest first) or asc")
				fs.String("after", "", "the next page after the page that printed this cursor (its sort and order go with it)")
				fs.Int64("limit", 50, "jobs per page (1-1000)")
				fs.Int64("offset", 0, "jobs to skip")
				fs.Int64("before", 0, "only jobs older than job ID: the next page after a page that ends with it (default order only)")
			}, run: jobsList},
		"bulk": {usage: "retry|cancel [--status S] [--plugin P] [--path TEXT] [--error TEXT] [--yes]",
			help: "retry the FAILED jobs, or cancel the unfinished ones, of a filter (all pages); without --yes, only count them",
			flags: func(fs *flag.FlagSet) {
				jobFilterFlags(fs)
				fs.Bool("yes", false, "act; without it the command only says how many jobs it would change")
			}, minArgs: 1, maxArgs: 1, run: jobsBulk},
		"prune": {usage: "[--completed-older-than D] [--failed-older-than D] [--yes]",
			help: "delete COMPLETED, or FAILED and SKIPPED, jobs that ended longer ago than D (e.g. 720h); without --yes, only count them",
			flags: func(fs *flag.FlagSet) {
				fs.String("completed-older-than", "", "delete COMPLETED jobs that ended longer ago than this")
				fs.String("failed-older-than", "", "delete FAILED and SKIPPED jobs that ended longer ago than this")
				fs.Bool("yes", false, "delete; without it the command only says how many jobs it would delete")
			}, run: jobsPrune},
		"show": {usage: "ID", help: "show one job with its receipt", minArgs: 1, maxArgs: 1, run: jobsShow},
		"enqueue": {usage: "--plugin P (--file PATH | --file-version ID) [--priority N] [--config-overrides JSON]",
			help: "queue a job for a file",
			flags: func(fs *flag.FlagSet) {
				fs.String("plugin", "", "plugin to run (required)")
				fs.String("file", "", "the file, by path under a source root")
				fs.Int64("file-version", 0, "the file, by cf_file_version id")
				fs.Int64("priority", 0, "higher runs first")
				fs.String("config-overrides", "", `sinks per topic, e.g. {"output": {"uri": "parquet://out.parquet"}}`)
			}, run: jobsEnqueue},
		"cancel": {usage: "ID", help: "cancel a job: QUEUED → SKIPPED; RUNNING → ABORT, then SKIPPED", minArgs: 1, maxArgs: 1, run: jobsCancel},
		"retry":  {usage: "ID", help: "queue a FAILED job again", minArgs: 1, maxArgs: 1, run: jobsRetry},
	},
	"workers": {
		"ls": {help: "list the connected workers", run: workersList},
		"drain": {usage: "ID", help: "give worker ID no new jobs; its running jobs finish (it stays drained across reconnects until undrain)",
			minArgs: 1, maxArgs: 1, run: func(ctx context.Context, c *cli, args []string) error { return workersAction(ctx, c, args, "drain") }},
		"undrain": {usage: "ID", help: "give a drained worker jobs again", minArgs: 1, maxArgs: 1,
			run: func(ctx context.Context, c *cli, args []string) error { return workersAction(ctx, c, args, "undrain") }},
		"disconnect": {usage: "ID", help: "forget worker ID now: its running jobs are queued again and it is told to identify again",
			minArgs: 1, maxArgs: 1, run: func(ctx context.Context, c *cli, args []string) error {
				return workersAction(ctx, c, args, "disconnect")
			}},
	},
	"plugins": {
		"ls": {help: "list plugins: active version, subscriptions", run: pluginsList},
		"add-builtin": {usage: "NAME [TAG...]", help: "register a built-in plugin of casparian-worker (" + strings.Join(job.BuiltinPlugins, ", ") +
			") so that its jobs run, subscribed to files tagged TAG", minArgs: 1, maxArgs: -1, run: pluginsAddBuiltin},
		"subscribe": {usage: "NAME TAG... | NAME PLUGIN:TOPIC", help: "queue jobs of plugin NAME for files tagged TAG, or for every artifact " +
			"plugin PLUGIN reports on TOPIC (chaining; e.g. csv:output)", minArgs: 2, maxArgs: -1, run: pluginsSubscribe},
		"unsubscribe":   {usage: "NAME PLUGIN:TOPIC", help: "stop chaining plugin NAME on PLUGIN's TOPIC", minArgs: 2, maxArgs: 2, run: pluginsUnsubscribe},
		"subscriptions": {usage: "NAME", help: "plugin NAME's subscriptions to other plugins' topics", minArgs: 1, maxArgs: 1, run: pluginsSubscriptions},
		"pause": {usage: "NAME", help: "stop dispatching plugin NAME's queued jobs (running ones finish)", minArgs: 1, maxArgs: 1,
			run: func(ctx context.Context, c *cli, args []string) error { return pluginsPause(ctx, c, args, true) }},
		"resume": {usage: "NAME", help: "dispatch plugin NAME's queued jobs again", minArgs: 1, maxArgs: 1,
			run: func(ctx context.Context, c *cli, args []string) error { return pluginsPause(ctx, c, args, false) }},
		"set": {usage: "NAME [--job-timeout D|default] [--max-retries N] [--reuse on|off|default]",
			help: "set plugin NAME's own job timeout (0: none), max retries (-1: the Sentinel's) and reuse of earlier results",
			flags: func(fs *flag.FlagSet) {
				fs.String("job-timeout", "", "abort and requeue its jobs running longer than this (5m; 0: none; default: --job-timeout)")
				fs.Int64("max-retries", -2, "requeues after infrastructure faults before its job is FAILED (-1: --max-retries)")
				fs.String("reuse", "", "link a copy, rename or revert of a processed file to the earlier result instead of running it "+
					"(on, off; default: on for built-ins and WebAssembly)")
			}, minArgs: 1, maxArgs: 1, run: pluginsSet},
		"backfill": {usage: "NAME [--yes]", help: "queue jobs of plugin NAME for the existing files it subscribes to and has not run on; without --yes, only count them",
			flags: func(fs *flag.FlagSet) {
				fs.Bool("yes", false, "queue them; without it the command only says how many")
			}, minArgs: 1, maxArgs: 1, run: pluginsBackfill},
		"rerun": {usage: "NAME [--yes]", help: "queue again plugin NAME's jobs that completed before its active version was deployed; without --yes, only count them",
			flags: func(fs *flag.FlagSet) {
				fs.Bool("yes", false, "queue them; without it the command only says how many")
			}, minArgs: 1, maxArgs: 1, run: pluginsRerun},
		"compare": {usage: "NAME V1 V2", help: "compare the shadow run of version V2 (publish --shadow) with V1's results: rows, schema, content per file",
			minArgs: 3, maxArgs: 3, run: pluginsCompare},
		"promote": {usage: "NAME V2", help: "make the shadow version V2 ACTIVE (the others SUPERSEDED) and end its shadow run",
			minArgs: 2, maxArgs: 2, run: func(ctx context.Context, c *cli, args []string) error { return pluginsShadowEnd(ctx, c, args, true) }},
		"discard": {usage: "NAME V2", help: "end the shadow run of V2: its queued shadow jobs are cancelled, the ACTIVE version stays",
			minArgs: 2, maxArgs: 2, run: func(ctx context.Context, c *cli, args []string) error { return pluginsShadowEnd(ctx, c, args, false) }},
	},
	"environments": {
		"ls": {help: "list the plugin environments: hash, size, last used, the plugin versions that use each", run: environmentsList},
	},
	"files": {
		"lineage": {usage: "VERSION_ID", help: "what was made from a file version: each output, by which job and plugin manifest",
			minArgs: 1, maxArgs: 1, run: filesLineage},
	},
	"outputs": {
		"provenance": {usage: "URI", help: "where the outputs written to a sink URI came from", minArgs: 1, maxArgs: 1, run: outputsProvenance},
		"stale": {usage: "[--plugin P]", help: "outputs a newer file version or a newer plugin version made stale",
			flags: func(fs *flag.FlagSet) {
				fs.String("plugin", "", "only this plugin's outputs")
			}, run: outputsStale},
		"rerun-stale": {usage: "[--plugin P] [--dry-run]", help: "queue a job per stale file and plugin (not already queued or running)",
			flags: func(fs *flag.FlagSet) {
				fs.String("plugin", "", "only this plugin's outputs")
				fs.Bool("dry-run", false, "only count them")
			}, run: outputsRerunStale},
	},
	"sources": {
		"ls":     {help: "list the source roots the scanner walks", run: sourcesList},
		"add":    {usage: "PATH", help: "scan the folder PATH (made absolute)", minArgs: 1, maxArgs: 1, run: sourcesAdd},
		"rescan": {help: "ask the Sentinel to scan the source roots now", run: sourcesRescan},
	},
	"routes": {
		"ls": {help: "list the routing rules", run: routesList},
		"add": {usage: "PATTERN TAG [--priority N]", help: "tag files whose path matches PATTERN (gitignore-style) with TAG",
			flags: func(fs *flag.FlagSet) {
				fs.Int64("priority", 0, "rule priority")
			}, minArgs: 2, maxArgs: 2, run: routesAdd},
	},
	"status": {
		"": {help: "queue counts and workers at a glance", run: status},
	},
	"token": {
		"new": {help: "print a new random API token (32 bytes from crypto/rand, base64url) for an --api-tokens file", run: tokenNew},
	},
	"keygen": {
		"": {usage: "[--curve] [--out PREFIX] [--force]",
			help: "write PREFIX.key (0600) and PREFIX.pub: an Ed25519 signing key, or with --curve a CurveZMQ connection key",
			flags: func(fs *flag.FlagSet) {
				fs.String("out", "", "path prefix of the two key files (default "+defaultKeyPrefix+", or "+defaultCurvePrefix+" with --curve)")
				fs.Bool("force", false, "replace existing key files")
				fs.Bool("curve", false, "write a CurveZMQ key pair (Z85) for --curve-secret-key, --sentinel-key and --authorized-workers "+
					"instead of an Ed25519 publisher key")
			}, run: keygen},
	},
	"publish": {
		"": {usage: "FILE --name N --version V --key K [--sentinel tcp://…] [--sentinel-key K --curve-secret-key F] [--lockfile F] [--publisher NAME] [--email E] [--shadow [--shadow-files N]]",
			help: "sign and DEPLOY a plugin (a .wasm is sent base64) to the Sentinel; prints the ACK or the ERR",
			flags: func(fs *flag.FlagSet) {
				fs.String("name", "", "plugin name (required)")
				fs.String("version", "", "plugin version (required)")
				fs.String("key", "", "publisher private key from casparian keygen (required unless --unsigned)")
				fs.String("sentinel", defaultSentinel, "the Sentinel's ZeroMQ endpoint (env CASPARIAN_SENTINEL)")
				fs.String("sentinel-key", "", "the Sentinel's CURVE public key: its .pub file or the 40 Z85 characters "+
					"(env CASPARIAN_SENTINEL_KEY; with --curve-secret-key, for a Sentinel run with --curve-secret-key)")
				fs.String("curve-secret-key", "", "file with this publisher's CURVE secret key, from casparian keygen --curve; "+
					"its .pub must be in the Sentinel's --authorized-workers (env CASPARIAN_CURVE_SECRET_KEY)")
				fs.String("lockfile", "", "the plugin's environment lockfile (default: none)")
				fs.String("publisher", "", "publisher name (default: $USER)")
				fs.String("email", "", "publisher email")
				fs.Bool("unsigned", false, "send without a signature (only a Sentinel with --allow-unsigned accepts it)")
				fs.Bool("shadow", false, "store this version without making it ACTIVE and run it over what the ACTIVE version "+
					"processed into shadow sinks; then plugins compare, promote or discard")
				fs.Int64("shadow-files", 0, "with --shadow, how many of the newest processed file versions (default 1000)")
			}, minArgs: 1, maxArgs: 1, run: publish},
	},
}

// usageError is a mistake in the command line; it exits 2 with usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	opts := options{server: defaultServer, timeout: 30 * time.Second}
	if s := getenv("CASPARIAN_SERVER"); s != "" {
		opts.server = s
	}
	// A --token flag replaces it.
	opts.token = getenv("CASPARIAN_TOKEN")
	global := flag.NewFlagSet("casparian", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	commonFlags(global, &opts)
	// Only before the command: it is not an option of any command.
	showVersion := global.Bool("version", false, "print the version and build information, then exit")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return exitOK
		}
		return failUsage(stderr, err)
	}
	if *showVersion {
		buildinfo.Print(stdout, "casparian", version)
		return exitOK
	}
	rest := global.Args()
	if len(rest) == 0 || rest[0] == "help" {
		printUsage(stdout)
		if len(rest) == 0 {
			return exitUsage
		}
		return exitOK
	}
	group, ok := commands[rest[0]]
	if !ok {
		return failUsage(stderr, usagef("unknown command %q", rest[0]))
	}
	verb, rest := "", rest[1:]
	cmd, ok := group[""]
	if !ok {
		if len(rest) == 0 {
			return failUsage(stderr, usagef("%s needs a subcommand: %s", args0(global, args), verbs(group)))
		}
		verb, rest = rest[0], rest[1:]
		if _, has := group[verb]; !has && verb == "list" {
			verb = "ls" // every "ls" answers to "list" too
		}
		if cmd, ok = group[verb]; !ok {
			return failUsage(stderr, usagef("unknown subcommand %q of %s (want %s)", verb, args0(global, args), verbs(group)))
		}
	}
	name := strings.TrimSpace(args0(global, args) + " " + verb)

	fs := flag.NewFlagSet("casparian "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	commonFlags(fs, &opts)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	positional, err := parseInterleaved(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		commandUsage(stdout, name, cmd, fs)
		return exitOK
	}
	if err != nil {
		return failUsage(stderr, fmt.Errorf("%s: %w", name, err))
	}
	if len(positional) < cmd.minArgs || (cmd.maxArgs >= 0 && len(positional) > cmd.maxArgs) {
		fmt.Fprintf(stderr, "casparian %s: wrong number of arguments\n", name)
		commandUsage(stderr, name, cmd, fs)
		return exitUsage
	}
	c := &cli{opts: opts, stdout: stdout, stderr: stderr, str: map[string]*string{}, num: map[string]*int64{},
		flag: map[string]*bool{}, getenv: getenv}
	fs.VisitAll(func(f *flag.Flag) {
		switch g := f.Value.(flag.Getter).Get().(type) {
		case string:
			v := g
			c.str[f.Name] = &v
		case int64:
			v := g
			c.num[f.Name] = &v
		case bool:
			v := g
			c.flag[f.Name] = &v
		}
	})
	if c.api, err = newClient(opts.server, opts.token, opts.timeout); err != nil {
		return failUsage(stderr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	if err := cmd.run(ctx, c, positional); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "casparian %s: %v\n", name, err)
			commandUsage(stderr, name, cmd, fs)
			return exitUsage
		}
		fmt.Fprintf(stderr, "casparian %s: %v\n", name, err)
		return exitError
	}
	return exitOK
}

// args0 is the group name as typed.
func args0(global *flag.FlagSet, _ []string) string { return global.Arg(0) }

func commonFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.server, "server", o.server, "Sentinel HTTP API base URL (env CASPARIAN_SERVER)")
	fs.Var(secret{&o.token}, "token", "API `TOKEN` from the Sentinel's --api-tokens file, sent as Authorization: Bearer (env CASPARIAN_TOKEN)")
	fs.BoolVar(&o.json, "json", o.json, "print the API's JSON instead of a table")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "give up on the Sentinel after this long")
}

// secret is a string flag whose value help never shows: a token from
// CASPARIAN_TOKEN must not be printed as the flag's default.
type secret struct{ v *string }

func (s secret) String() string     { return "" }
func (s secret) Set(v string) error { *s.v = v; return nil }
func (s secret) Get() any           { return "" }

// parseInterleaved parses flags that may come before, between or after the
// positional arguments ("jobs cancel 7 --json"); "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func verbs(group map[string]*command) string {
	var vs []string
	for v := range group {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	return strings.Join(vs, ", ")
}

func failUsage(w io.Writer, err error) int {
	fmt.Fprintf(w, "casparian: %v\nRun 'casparian help' for usage.\n", err)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, `Usage: casparian [--server URL] [--token TOKEN] [--json] COMMAND [ARGS]
       casparian --version   (print the version and build information)

Operate a running Casparian Sentinel through its HTTP API
(casparian-sentinel --http 127.0.0.1:8080).

Commands:
`)
	var groups []string
	for g := range commands {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		var vs []string
		for v := range commands[g] {
			vs = append(vs, v)
		}
		sort.Strings(vs)
		for _, v := range vs {
			cmd := commands[g][v]
			line := strings.TrimSpace(g + " " + v + " " + cmd.usage)
			if len(line) > 40 {
				fmt.Fprintf(w, "  %s\n  %-40s %s\n", line, "", cmd.help)
				continue
			}
			fmt.Fprintf(w, "  %-40s %s\n", line, cmd.help)
		}
	}
	fmt.Fprintf(w, `
Flags (before or after the command):
  --server URL     Sentinel HTTP API base URL (default %s, env CASPARIAN_SERVER)
  --token TOKEN    API token, for a Sentinel with --api-tokens (env CASPARIAN_TOKEN): a read
                   token lists and shows, an admin token also enqueues, cancels and configures
  --json           print the API's JSON instead of a table
  --timeout D      give up on the Sentinel after this long (default 30s)

Exit codes: 0 success, 1 error (including an unreachable Sentinel), 2 usage.
`, defaultServer)
}

func commandUsage(w io.Writer, name string, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: casparian %s %s\n  %s\n\nFlags:\n", name, cmd.usage, cmd.help)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}
