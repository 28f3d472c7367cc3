package actors

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/db"
	"github.com/casparian/sentinel/internal/testwait"
	"github.com/casparian/sentinel/job"
)

// slowQueue stands in for the queue actor: it lists one root and answers
// the scanner's RecordScans one by one, gap apart, once batches of them
// arrived, as a loaded queue actor working through them in turn does.
type slowQueue struct {
	root    string
	gap     time.Duration
	batches int
	waiting []*actor.PID
	bg      *sync.WaitGroup
}

func (q *slowQueue) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *ScanStateQuery:
		ctx.Respond(&ScanState{Pass: m.Pass, Roots: []ScanRoot{{Root: job.SourceRoot{ID: 1, Path: q.root}}}})
	case *RecordScan:
		q.waiting = append(q.waiting, ctx.Sender())
		if len(q.waiting) < q.batches {
			return
		}
		sys, to, pass, n := ctx.ActorSystem(), q.waiting, m.Pass, len(m.Files)
		q.waiting = nil
		q.bg.Add(1)
		go func() {
			defer q.bg.Done()
			for _, pid := range to {
				time.Sleep(q.gap)
				sys.Root.Send(pid, &ScanRecorded{Pass: pass, Records: make([]db.ScanRecord, n)})
			}
		}()
	case *FinishScan:
		ctx.Respond(&ScanFinished{Pass: m.Pass})
	}
}

// syncBuffer is a log destination the actors and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// alwaysLeading is the lease of a Sentinel that is alone on its database.
type alwaysLeading struct{ db.Lease }

func (alwaysLeading) Leading() bool { return true }

// A queue actor that answers every request within --db-timeout, but one
// after another, must not be taken for one that stopped answering: the
// watchdog counts from the latest answer, not from the latest request. (It
// counted from the latest request: five RecordScans sent together, each
// answered within the timeout, had the pass abandoned once their total
// passed twice --db-timeout, as TestScanner_ManyFiles saw under load.)
func TestScanner_WatchdogSparesAQueueThatAnswersInTurn(t *testing.T) {
	dir := t.TempDir()
	const batches = 5
	for i := 0; i < batches*scanRecordBatch; i++ {
		p := filepath.Join(dir, fmt.Sprintf("f%04d.csv", i))
		if err := os.WriteFile(p, []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.DBTimeout = 400 * time.Millisecond
	cfg.ScanInterval = time.Hour // one pass, then none within the test
	logs := &syncBuffer{}
	stats := NewStats()
	bg := &sync.WaitGroup{}
	d := deps{cfg: cfg, stats: stats, log: zerolog.New(logs), bg: bg, roots: []string{dir}, lease: alwaysLeading{}}

	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	defer sys.Shutdown()
	// Each answer comes 0.75 × --db-timeout after the previous one: all
	// five come 3.75 × --db-timeout after the last request was sent.
	queue, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &slowQueue{root: dir, gap: 3 * cfg.DBTimeout / 4, batches: batches, bg: bg}
	}), "queue")
	if err != nil {
		t.Fatal(err)
	}
	scanner, err := sys.Root.SpawnNamed(newScannerProps(d, peers{queue: queue}), "scanner")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		bg.Wait() // every answer sent, every file hashed
		_ = sys.Root.StopFuture(scanner).Wait()
		_ = sys.Root.StopFuture(queue).Wait()
	}()

	testwait.Eventually(t, 30*time.Second, "the pass done or abandoned", func() bool {
		return stats.ScanPasses.Load() > 0 || strings.Contains(logs.String(), "abandoned")
	})
	if strings.Contains(logs.String(), "abandoned") || stats.ScanPasses.Load() != 1 {
		t.Errorf("%d passes done; logs:\n%s", stats.ScanPasses.Load(), logs.String())
	}
}
