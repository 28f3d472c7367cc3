package actors

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/confine"
	"github.com/casparian/sentinel/job"
)

// scannerActor is the scout: every --scan-interval it walks the active source
// roots, hashes new and changed files once their size and mtime are stable,
// and has the queue actor record them (version, routing tags, one job per
// subscribed plugin) and mark the files it no longer finds.
//
// Its mailbox never waits on the disk: one walker goroutine lists the roots
// and a bounded pool of hasher goroutines reads files; both report back as
// messages. Passes never overlap; the next starts --scan-interval after the
// previous ended. Which files are known (size, mtime) is read from the
// database at the start of each pass, so a restart of this actor or of the
// process hashes nothing that has not changed.
type scannerActor struct {
	deps    deps
	peers   peers
	log     zerolog.Logger
	hashers int

	timer timer // the next pass; during a pass, the watchdog
	bg    context.Context
	stop  context.CancelFunc // cancels this incarnation's goroutines
	pass  *scanPass          // nil between passes
	// following: another Sentinel leads and scans; this one waits.
	following bool
	// again: an operator asked for a pass during this one (RescanSources);
	// the next starts as soon as it ends.
	again bool
	// pending are new or changed files seen once, too recently modified to
	// hash; the next pass hashes them if their size and mtime held.
	pending map[fileKey]fileStat
	// unreadable remembers the error of each root that cannot be read, so
	// it is logged when it starts or changes, not at every pass.
	unreadable map[int64]string
}

// Scanner tuning.
const (
	// scanSettle: a file modified at least this long ago counts as stable
	// at first sight; a fresher one must look the same in two passes.
	scanSettle = 2 * time.Second
	// scanRecordBatch is how many hashed files one RecordScan carries (one
	// transaction).
	scanRecordBatch = 200
)

// scanPass is the state of one pass over every active root.
type scanPass struct {
	id          uint64
	started     time.Time
	roots       map[int64]*rootScan
	routes      []route
	walking     int        // roots not listed yet
	queue       []hashTask // stable files waiting for a hasher
	hashing     int        // hashers running
	batch       []db.ScannedFile
	outstanding int       // requests to the queue actor not answered yet
	lastHeard   time.Time // when the latest request was sent or answer came
	finishing   bool
	nextPending map[fileKey]fileStat

	hashed, recorded, jobs, missing int
}

// rootScan is one root within a pass.
type rootScan struct {
	root    job.SourceRoot
	known   map[string]db.ScanLocation
	ignore  []globPattern
	listed  bool // listed without a root-level error: missing files can be marked
	seen    []int64
	missing []int64
}

// route is a compiled routing rule.
type route struct {
	glob globPattern
	tag  string
}

type fileKey struct {
	root int64
	rel  string
}

type fileStat struct {
	size  int64
	mtime time.Time
}

// walkedFile is one regular file the walker found.
type walkedFile struct {
	rel   string // slash-separated, relative to the root
	size  int64
	mtime time.Time
}

// hashTask is one file to hash and what to record with it.
type hashTask struct {
	rootID int64
	rel    string
	abs    string
	size   int64
	mtime  time.Time
	tags   []string
}

// errChanged means a file changed while it was being hashed; the next pass
// tries again.
var errChanged = errors.New("file changed while being hashed")

func newScannerProps(d deps, p peers) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &scannerActor{deps: d, peers: p, log: d.log.With().Str("component", "scanner").Logger(),
			hashers: max(1, min(runtime.GOMAXPROCS(0), 4))}
	})
}

func (a *scannerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.pending = map[fileKey]fileStat{}
		a.unreadable = map[int64]string{}
		a.bg, a.stop = context.WithCancel(context.Background())
		a.timer.arm(ctx.ActorSystem(), ctx.Self(), 0)
	case *tick:
		if a.timer.current(m) {
			a.timer.fired()
			a.tick(ctx)
		}
	case *ScanState:
		a.planned(ctx, m)
	case *rootWalked:
		a.walked(ctx, m)
	case *fileHashed:
		a.hashed(ctx, m)
	case *ScanRecorded:
		a.recorded(ctx, m)
	case *ScanFinished:
		if a.current(m.Pass) {
			a.pass.answered()
			a.maybeFinish(ctx)
		}
	case *RescanSources:
		a.rescan(ctx)
	case *crash:
		panic("injected crash: scanner")
	case *actor.Stopping, *actor.Restarting:
		a.timer.stop()
		a.stop()
	}
}

// current reports whether a reply belongs to the pass in progress; replies
// to an abandoned pass or a previous incarnation are dropped.
func (a *scannerActor) current(pass uint64) bool { return a.pass != nil && a.pass.id == pass }

// tick starts a pass, or during one checks that the queue actor still
// answers: a request lost in a queue actor restart would stall the pass
// forever, so after twice --db-timeout without an answer the pass is given up
// and the next one starts after the interval. The silence counts from the
// latest answer, not the latest request: the queue actor answers requests in
// turn, each within --db-timeout, and a burst of them (a RecordScan per 200
// hashed files) may take several times that in all.
func (a *scannerActor) tick(ctx actor.Context) {
	if p := a.pass; p != nil {
		if p.outstanding > 0 && time.Since(p.lastHeard) > 2*a.deps.cfg.DBTimeout {
			a.log.Warn().Msg("scan pass abandoned: the queue actor did not answer")
			a.end(ctx, false)
			return
		}
		a.timer.arm(ctx.ActorSystem(), ctx.Self(), a.deps.cfg.DBTimeout)
		return
	}
	if !a.deps.lease.Leading() {
		// Several Sentinels share the database: only the leader scans,
		// and this one waits to become it.
		if !a.following {
			a.following = true
			a.log.Info().Msg("not the leader: another Sentinel runs the scanner")
		}
		a.timer.arm(ctx.ActorSystem(), ctx.Self(), a.deps.cfg.ScanInterval)
		return
	}
	if a.following {
		a.following = false
		a.log.Info().Msg("leader now: scanning")
	}
	a.pass = &scanPass{id: generations.Add(1), started: time.Now(), roots: map[int64]*rootScan{},
		nextPending: map[fileKey]fileStat{}}
	a.ask(ctx, &ScanStateQuery{Pass: a.pass.id})
	a.timer.arm(ctx.ActorSystem(), ctx.Self(), a.deps.cfg.DBTimeout)
}

func (a *scannerActor) ask(ctx actor.Context, m any) {
	a.pass.outstanding++
	a.pass.lastHeard = time.Now()
	ctx.Request(a.peers.queue, m)
}

// answered counts an answer of the queue actor to this pass.
func (p *scanPass) answered() {
	p.outstanding--
	p.lastHeard = time.Now()
}

// planned starts the walker over the roots the database lists.
func (a *scannerActor) planned(ctx actor.Context, m *ScanState) {
	if !a.current(m.Pass) {
		return
	}
	p := a.pass
	p.answered()
	if m.Err != nil {
		a.end(ctx, false)
		return
	}
	p.routes = compileRoutes(m.Routes)
	jobs := make([]*rootScan, 0, len(m.Roots))
	for _, r := range m.Roots {
		rs := &rootScan{root: r.Root, known: r.Known}
		for _, rule := range m.Ignore {
			if rule.RootID != 0 && rule.RootID != r.Root.ID {
				continue
			}
			if g, ok := compileGlob(rule.Pattern); ok {
				rs.ignore = append(rs.ignore, g)
			}
		}
		p.roots[r.Root.ID] = rs
		jobs = append(jobs, rs)
	}
	p.walking = len(jobs)
	if p.walking == 0 {
		a.end(ctx, true)
		return
	}
	sys, self, bg, pass := ctx.ActorSystem(), ctx.Self(), a.bg, p.id
	a.deps.bg.Add(1)
	go func() {
		defer a.deps.bg.Done()
		for _, rs := range jobs {
			dir, files, errs, err := walkRoot(bg, rs.root.Path, a.deps.roots, rs.ignore)
			if bg.Err() != nil {
				return
			}
			a.deps.stats.ScanErrors.Add(int64(errs))
			sys.Root.Send(self, &rootWalked{pass: pass, rootID: rs.root.ID, dir: dir, files: files, err: err})
		}
	}()
}

// walked compares a root's listing with what the database knows: unchanged
// files are only marked seen, stable new or changed ones are queued for
// hashing, fresh ones wait for the next pass, and known files not listed are
// missing.
func (a *scannerActor) walked(ctx actor.Context, m *rootWalked) {
	if !a.current(m.pass) {
		return
	}
	p := a.pass
	p.walking--
	rs := p.roots[m.rootID]
	var outside *confine.OutsideError
	switch {
	case errors.As(m.err, &outside):
		// Added by an older version or another tool: refused, as the API
		// and the bootstrap file refuse it, and its files are left as the
		// database knows them.
		if a.unreadable[m.rootID] != m.err.Error() {
			a.unreadable[m.rootID] = m.err.Error()
			a.log.Warn().Err(m.err).Str("root", rs.root.Path).Msg("source root skipped: it is outside --allowed-roots")
		}
	case m.err != nil:
		a.deps.stats.ScanErrors.Add(1)
		if a.unreadable[m.rootID] != m.err.Error() {
			a.unreadable[m.rootID] = m.err.Error()
			a.log.Warn().Err(m.err).Str("root", rs.root.Path).Msg("source root cannot be read; nothing in it is marked missing")
		}
	default:
		if _, ok := a.unreadable[m.rootID]; ok {
			delete(a.unreadable, m.rootID)
			a.log.Info().Str("root", rs.root.Path).Msg("source root readable again")
		}
		rs.listed = true
		found := make(map[string]bool, len(m.files))
		now := time.Now()
		for _, f := range m.files {
			found[f.rel] = true
			known, isKnown := rs.known[f.rel]
			if isKnown {
				rs.seen = append(rs.seen, known.ID)
				if known.Size == f.size && sameMTime(known.MTime, f.mtime) {
					continue // unchanged: never hashed again
				}
			}
			key, stat := fileKey{root: m.rootID, rel: f.rel}, fileStat{size: f.size, mtime: f.mtime}
			if now.Sub(f.mtime) < scanSettle && a.pending[key] != stat {
				p.nextPending[key] = stat // still being written, perhaps
				continue
			}
			p.queue = append(p.queue, hashTask{rootID: m.rootID, rel: f.rel,
				abs: filepath.Join(m.dir, filepath.FromSlash(f.rel)), size: f.size, mtime: f.mtime,
				tags: p.tags(f.rel)})
		}
		for rel, l := range rs.known {
			if !found[rel] && !l.Missing {
				rs.missing = append(rs.missing, l.ID)
			}
		}
		p.missing += len(rs.missing)
	}
	a.pump(ctx)
	a.maybeFinish(ctx)
}

// tags are the tags of every routing rule the path matches.
func (p *scanPass) tags(rel string) []string { return routeTags(p.routes, rel) }

// pump starts hashers while the pool has room.
func (a *scannerActor) pump(ctx actor.Context) {
	p := a.pass
	sys, self, bg := ctx.ActorSystem(), ctx.Self(), a.bg
	for p.hashing < a.hashers && len(p.queue) > 0 {
		t := p.queue[0]
		p.queue = p.queue[1:]
		p.hashing++
		a.deps.bg.Add(1)
		go func(pass uint64) {
			defer a.deps.bg.Done()
			sum, err := hashFile(bg, t)
			if bg.Err() != nil {
				return
			}
			sys.Root.Send(self, &fileHashed{pass: pass, task: t, hash: sum, err: err})
		}(p.id)
	}
}

func (a *scannerActor) hashed(ctx actor.Context, m *fileHashed) {
	if !a.current(m.pass) {
		return
	}
	p := a.pass
	p.hashing--
	t := m.task
	switch {
	case errors.Is(m.err, errChanged), errors.Is(m.err, fs.ErrNotExist):
		// Changed or deleted under our feet: the next pass sees what it is.
		a.log.Debug().Err(m.err).Str("file", t.abs).Msg("file not hashed")
	case m.err != nil:
		a.deps.stats.ScanErrors.Add(1)
		a.log.Warn().Err(m.err).Str("file", t.abs).Msg("file cannot be read")
	default:
		a.deps.stats.FilesHashed.Add(1)
		p.hashed++
		p.batch = append(p.batch, db.ScannedFile{RootID: t.rootID, RelPath: t.rel, Hash: m.hash,
			Size: t.size, ModTime: t.mtime, Tags: t.tags})
		if len(p.batch) >= scanRecordBatch {
			a.record(ctx)
		}
	}
	a.pump(ctx)
	a.maybeFinish(ctx)
}

func (a *scannerActor) record(ctx actor.Context) {
	p := a.pass
	a.ask(ctx, &RecordScan{Pass: p.id, Files: p.batch})
	p.batch = nil
}

func (a *scannerActor) recorded(ctx actor.Context, m *ScanRecorded) {
	if !a.current(m.Pass) {
		return
	}
	p := a.pass
	p.answered()
	// On an error nothing was written; the files still look changed, so
	// the next pass hashes and records them again.
	for _, r := range m.Records {
		if r.VersionID != 0 {
			p.recorded++
		}
		p.jobs += len(r.Jobs)
	}
	a.maybeFinish(ctx)
}

// maybeFinish ends the pass once every root is listed, every stable file
// hashed and recorded, and the seen/missing marks written.
func (a *scannerActor) maybeFinish(ctx actor.Context) {
	p := a.pass
	if p.walking > 0 || p.hashing > 0 || len(p.queue) > 0 {
		return
	}
	if len(p.batch) > 0 {
		a.record(ctx)
		return
	}
	if p.outstanding > 0 {
		return
	}
	if !p.finishing {
		p.finishing = true
		for _, rs := range p.roots {
			if rs.listed && (len(rs.seen) > 0 || len(rs.missing) > 0) {
				a.ask(ctx, &FinishScan{Pass: p.id, RootID: rs.root.ID, Seen: rs.seen, Missing: rs.missing})
			}
		}
		if p.outstanding > 0 {
			return
		}
	}
	a.end(ctx, true)
}

// end closes the pass and schedules the next.
func (a *scannerActor) end(ctx actor.Context, ok bool) {
	p := a.pass
	a.pass = nil
	if ok {
		a.pending = p.nextPending
		a.deps.stats.ScanPasses.Add(1)
		ev := a.log.Debug()
		if p.recorded > 0 || p.missing > 0 {
			ev = a.log.Info()
		}
		ev.Dur("took", time.Since(p.started)).Int("roots", len(p.roots)).Int("hashed", p.hashed).
			Int("versions", p.recorded).Int("jobs", p.jobs).Int("missing", p.missing).
			Int("waiting_to_settle", len(p.nextPending)).Msg("scan pass done")
	}
	next := a.deps.cfg.ScanInterval
	if a.again {
		a.again, next = false, 0
	}
	a.timer.arm(ctx.ActorSystem(), ctx.Self(), next)
}

// rescan starts a pass now, or right after the one in progress (whose walk
// may have passed the files the operator means).
func (a *scannerActor) rescan(ctx actor.Context) {
	if a.pass != nil {
		a.again = true
		return
	}
	a.timer.arm(ctx.ActorSystem(), ctx.Self(), 0)
}

// sameMTime compares a stored last_known_mtime (float seconds) with a file's
// mtime; float64 keeps about a quarter microsecond at today's Unix times.
func sameMTime(stored float64, t time.Time) bool {
	return math.Abs(stored-float64(t.UnixNano())/1e9) < 1e-6
}

// walkRoot lists the regular files under the source root given, skipping
// dot-files, dot-folders and what the ignore patterns match, and returns the
// folder it resolved to (where the files are to be read). Entries that
// vanish or cannot be read are skipped and counted in errs; err is set only
// when the root itself cannot be listed (or ctx ends), or is not under an
// allowed root (a *confine.OutsideError).
//
// The root is checked against the allowed roots at every pass, after ".."
// and symbolic links are resolved, and the walk starts from where it
// resolves to. Inside it no link is followed: linked folders are not entered
// and linked files are not files to process, so nothing outside the root is
// ever read.
func walkRoot(ctx context.Context, given string, allowed []string, ignore []globPattern) (root string, files []walkedFile, errs int, err error) {
	if root, err = CheckSourceRoot(given, allowed); err != nil {
		return "", nil, 0, err
	}
	info, err := os.Stat(root)
	if err != nil {
		return "", nil, 0, err
	}
	if !info.IsDir() {
		return "", nil, 0, fmt.Errorf("%s is not a folder", given)
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if p == root {
				return err
			}
			errs++
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if p == root {
			return nil
		}
		rel, relErr := filepath.Rel(root, p)
		if relErr != nil {
			errs++
			return nil
		}
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(d.Name(), ".") || ignored(ignore, rel, d.IsDir()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // folders are walked; links, sockets and devices are not files to process
		}
		fi, err := d.Info()
		if err != nil {
			errs++ // vanished since the folder was read
			return nil
		}
		files = append(files, walkedFile{rel: rel, size: fi.Size(), mtime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return "", nil, errs, err
	}
	return root, files, errs, nil
}

func ignored(ignore []globPattern, rel string, isDir bool) bool {
	for _, g := range ignore {
		if g.matchEntry(rel, isDir) {
			return true
		}
	}
	return false
}

// hashFile returns the SHA-256 of a file, or errChanged when its size or
// mtime differ from what the walk saw, before or after reading.
func hashFile(ctx context.Context, t hashTask) (string, error) {
	f, err := os.Open(t.abs)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }() // read only
	if fi, err := f.Stat(); err != nil {
		return "", err
	} else if fi.Size() != t.size || !fi.ModTime().Equal(t.mtime) {
		return "", errChanged
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, ctxReader{ctx: ctx, r: f}, make([]byte, 64<<10)); err != nil {
		return "", err
	}
	if fi, err := os.Stat(t.abs); err != nil {
		return "", err
	} else if fi.Size() != t.size || !fi.ModTime().Equal(t.mtime) {
		return "", errChanged
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a long read when the scanner stops.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
