//go:build docker

package docker_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pgImage is the PostgreSQL image of docker-compose.postgres.yml, built by
// docker/build-postgres.sh. The tests use the user's tag: the script skips
// an image already built from the same recipe, and a debootstrap takes
// minutes.
const pgImage = "casparian-postgres:local"

// newPostgresStack prepares a project of docker-compose.postgres.yml: two
// Sentinels on one PostgreSQL, workers spread over both. The helpers start
// out asking sentinel-a's API.
func newPostgresStack(t *testing.T, jobDelay time.Duration) *pgStack {
	t.Helper()
	start := time.Now()
	build := exec.Command(filepath.Join(repoRoot, "docker", "build-postgres.sh"))
	build.Env = append(os.Environ(), "CASPARIAN_PG_IMAGE="+pgImage)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker/build-postgres.sh: %v\n%s", err, out)
	} else {
		t.Logf("%s in %s", strings.TrimSpace(string(out)), time.Since(start).Round(100*time.Millisecond))
	}
	s := newProject(t, jobDelay,
		[]string{"docker-compose.postgres.yml", filepath.Join("tests", "docker", "compose.postgres.test.yml")},
		"sentinel-a", "worker-a", "worker-b")
	p := &pgStack{stack: s, httpPorts: map[string]int{"sentinel-a": freePort(t), "sentinel-b": freePort(t)}}
	s.httpPort = p.httpPorts["sentinel-a"]
	s.env = append(s.env,
		"CASPARIAN_PG_IMAGE="+pgImage,
		"CASPARIAN_HTTP_PORT_A="+strconv.Itoa(p.httpPorts["sentinel-a"]),
		"CASPARIAN_HTTP_PORT_B="+strconv.Itoa(p.httpPorts["sentinel-b"]),
		"CASPARIAN_ZMQ_PORT_A="+strconv.Itoa(freePort(t)),
		"CASPARIAN_ZMQ_PORT_B="+strconv.Itoa(freePort(t)),
	)
	return p
}

// pgStack is a project of docker-compose.postgres.yml.
type pgStack struct {
	*stack
	httpPorts map[string]int
}

// use points the helpers (API, docker cp) at one of the Sentinels.
func (p *pgStack) use(service string) {
	p.sentinelService = service
	p.httpPort = p.httpPorts[service]
}

// workersOn lists the workers connected to one Sentinel.
func (p *pgStack) workersOn(service string) ([]worker, error) {
	prev := p.sentinelService
	p.use(service)
	defer p.use(prev)
	return p.workers()
}

// healthy waits until a service's container reports healthy.
func (p *pgStack) healthy(service string) {
	p.t.Helper()
	id := p.container(service)
	p.eventually(upTimeout, service+" is healthy", func() (bool, string) {
		st := p.docker("inspect", "-f", "{{.State.Health.Status}}", id)
		return st == "healthy", st
	})
}

// health is the answer of a Sentinel's /healthz.
type health struct {
	Status   string `json:"status"`
	Sentinel string `json:"sentinel"`
	Leader   bool   `json:"leader"`
}

// healthz asks one Sentinel's /healthz (open without a token).
func (p *pgStack) healthz(service string) (health, error) {
	prev := p.sentinelService
	p.use(service)
	defer p.use(prev)
	var h health
	err := p.getWith("/healthz", "", &h)
	return h, err
}

// leader waits until exactly one Sentinel says it leads, and returns it.
func (p *pgStack) leader() string {
	p.t.Helper()
	var leader string
	p.eventually(upTimeout, "one leader", func() (bool, string) {
		var leaders []string
		seen := ""
		for _, service := range []string{"sentinel-a", "sentinel-b"} {
			h, err := p.healthz(service)
			seen += fmt.Sprintf("%s: %+v %v; ", service, h, err)
			if err == nil && h.Leader {
				leaders = append(leaders, service)
			}
		}
		if len(leaders) == 1 {
			leader = leaders[0]
		}
		return len(leaders) == 1, seen
	})
	return leader
}

// up starts the stack and waits until PostgreSQL and both Sentinels are
// healthy and each Sentinel has the two workers that start on it
// (worker-a's on sentinel-a, worker-b's on sentinel-b). It returns the
// workers by Sentinel.
func (p *pgStack) up() map[string][]worker {
	p.t.Helper()
	start := time.Now()
	p.compose("up", "-d")
	for _, service := range []string{"postgres", "sentinel-a", "sentinel-b"} {
		p.healthy(service)
	}
	on := map[string][]worker{}
	for _, service := range []string{"sentinel-a", "sentinel-b"} {
		// A worker's identity starts with its container's hostname.
		hosts := map[string]bool{}
		for _, id := range strings.Fields(p.compose("ps", "-q", "worker-"+strings.TrimPrefix(service, "sentinel-"))) {
			hosts[p.docker("inspect", "-f", "{{.Config.Hostname}}", id)] = true
		}
		p.eventually(upTimeout, "2 workers on "+service, func() (bool, string) {
			ws, err := p.workersOn(service)
			if err != nil {
				return false, err.Error()
			}
			ready := 0
			for _, w := range ws {
				if w.Ready && hosts[containerOf(w.ID)] {
					ready++
				}
			}
			on[service] = ws
			return ready == 2 && len(ws) == 2, fmt.Sprint(ws)
		})
	}
	p.t.Logf("%s up, 2 workers on each Sentinel, in %s", p.project, time.Since(start).Round(100*time.Millisecond))
	return on
}

// Two Sentinels share a PostgreSQL database, each with two of the four
// workers. One Sentinel is killed in the middle of a run of a few hundred
// files: `docker kill`, which the restart policy leaves down, so the other
// must carry on alone. Its workers move to the surviving Sentinel (their
// --endpoint lists both), identify there with the jobs they hold, and the
// run ends with every job COMPLETED once, every output written, and the
// survivor healthy throughout.
func TestComposePostgres_KilledSentinelWorkersFinishOnTheOther(t *testing.T) {
	const files = 250
	p := newPostgresStack(t, 300*time.Millisecond)
	before := p.up()

	// Small files, one in five a CSV (csv into SQLite and checksum), the
	// rest text (text_stats and checksum): two jobs each.
	dir := t.TempDir()
	var paths, expected []string
	for i := range files {
		var name, body, plugin string
		if i%5 == 0 {
			name, plugin = fmt.Sprintf("table-%03d.csv", i), "csv"
			body = "id,name\n"
			for r := range i%7 + 1 {
				body += fmt.Sprintf("%d,row %d of %d\n", r, r, i)
			}
		} else {
			name, plugin = fmt.Sprintf("note-%03d.txt", i), "text_stats"
			body = strings.Repeat(fmt.Sprintf("line of note %d\n", i), i%9+1)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
		expected = append(expected, name+" "+plugin, name+" checksum")
	}
	start := time.Now()
	p.copyIn(paths...)

	// The victim is the leader (the one that scans, and requeues what dead
	// Sentinels' workers never came back for): its death hands over the
	// lead as well as its workers.
	victim := p.leader()
	survivor := map[string]string{"sentinel-a": "sentinel-b", "sentinel-b": "sentinel-a"}[victim]
	p.use(victim)
	victimWorkers := map[string]bool{}
	for _, w := range before[victim] {
		victimWorkers[w.ID] = true
	}
	// Mid-run: a good part of the jobs done, and the victim's workers
	// holding some.
	p.eventually(jobsTimeout, "a fifth of the jobs done and the victim's workers running some", func() (bool, string) {
		done, held := 0, 0
		for _, j := range p.jobs() {
			switch {
			case j.Status == "COMPLETED":
				done++
			case j.Status == "RUNNING" && victimWorkers[j.Worker]:
				held++
			}
		}
		return done >= len(expected)/5 && held >= 1, fmt.Sprintf("%d done, %d running on %s", done, held, victim)
	})
	heldAtKill := map[int64]bool{}
	for _, j := range p.jobs() {
		if j.Status == "RUNNING" && victimWorkers[j.Worker] {
			heldAtKill[j.ID] = true
		}
	}
	victimID := p.container(victim)
	p.docker("kill", victimID)
	killedAt := time.Since(start)

	// From now on the helpers ask the survivor. Its view of the queue just
	// after the kill adds the jobs the victim's workers took between the
	// first look and the kill; they cannot conclude any to a dead Sentinel.
	p.use(survivor)
	var atKill []job
	p.eventually(upTimeout, "the survivor's API answers", func() (bool, string) {
		atKill = p.jobs()
		return atKill != nil, ""
	})
	doneAtKill := map[string]int{}
	completed := 0
	for _, j := range atKill {
		if j.Status == "RUNNING" && victimWorkers[j.Worker] {
			heldAtKill[j.ID] = true
		}
		if j.Status == "COMPLETED" {
			doneAtKill[j.Worker]++
			completed++
		}
	}
	t.Logf("killed %s after %s: %d of %d jobs COMPLETED, %d held by its workers %v around the kill",
		victim, killedAt.Round(100*time.Millisecond), completed, len(expected), len(heldAtKill), keysOf(victimWorkers))

	p.eventually(upTimeout, survivor+" takes the lead", func() (bool, string) {
		h, err := p.healthz(survivor)
		return err == nil && h.Leader, fmt.Sprintf("%+v %v", h, err)
	})
	// The victim's workers move over and identify under the same identity:
	// the survivor ends with all four.
	p.eventually(upTimeout, "all four workers on "+survivor, func() (bool, string) {
		ws, err := p.workers()
		if err != nil {
			return false, err.Error()
		}
		moved, ready := 0, 0
		for _, w := range ws {
			if w.Ready {
				ready++
			}
			if victimWorkers[w.ID] {
				moved++
			}
		}
		return ready == 4 && moved == len(victimWorkers), fmt.Sprint(ws)
	})
	t.Logf("the workers of %s identified on %s %s after the kill", victim, survivor, (time.Since(start) - killedAt).Round(100*time.Millisecond))

	// Every job COMPLETED once, recorded for a worker that logged its
	// SUCCESS; only a job the victim's workers held when it died may have
	// run twice (requeued while its worker was between Sentinels).
	final := p.checkFinal(expected, heldAtKill)
	t.Logf("all %d jobs COMPLETED %s after the files were copied in", len(final), time.Since(start).Round(100*time.Millisecond))
	twice := 0
	successes := map[int64]int{}
	for _, c := range p.conclusions() {
		if c.Status == "SUCCESS" {
			successes[c.JobID]++
		}
	}
	for id := range heldAtKill {
		if successes[id] > 1 {
			twice++
		}
	}
	t.Logf("%d of the %d jobs held at the kill ran twice", twice, len(heldAtKill))

	// The victim's workers finished jobs on the survivor.
	doneAfter := map[string]int{}
	for _, j := range final {
		doneAfter[j.Worker]++
	}
	for w := range victimWorkers {
		if doneAfter[w] <= doneAtKill[w] {
			t.Errorf("worker %s (of %s) completed %d jobs by the kill and %d in all: none on %s",
				w, victim, doneAtKill[w], doneAfter[w], survivor)
		}
	}
	p.checkOutputs(final)

	// The survivor stayed up and healthy; the victim stayed down.
	id := p.container(survivor)
	if st := p.docker("inspect", "-f", "{{.RestartCount}} {{.State.Health.Status}}", id); st != "0 healthy" {
		t.Errorf("%s: restarts and health %q, want \"0 healthy\"", survivor, st)
	}
	if h, err := p.healthz(survivor); err != nil || h.Status != "ok" || !h.Leader {
		t.Errorf("%s /healthz: %+v %v, want ok and leader", survivor, h, err)
	}
	if st := p.docker("inspect", "-f", "{{.State.Running}}", victimID); st != "false" {
		t.Errorf("%s running again after docker kill: %s", victim, st)
	}
}

func keysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return sortedCopy(out)
}
