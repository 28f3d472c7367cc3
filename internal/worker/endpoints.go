package worker

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/casparian/sentinel/transport"
)

// Endpoints: the Sentinels a worker may connect to, in the order it tries
// them. It is connected to one at a time; when the watchdog gives up on the
// current one (SentinelTimeout of silence) it dials the next, round-robin,
// and identifies there as after any reconnect.

// maxFailoverDialWindow bounds how long one dial of one endpoint may wait
// for it to become reachable before the next endpoint is tried, when there
// are several. zmq4 retries an unreachable endpoint every 250 ms and would
// otherwise wait on it forever.
const (
	maxFailoverDialWindow = 5 * time.Second
	minFailoverDialWindow = time.Second
)

// endpoint is one Sentinel the worker may connect to, with the CURVE keys
// to reach it (nil: plaintext).
type endpoint struct {
	addr  string
	curve *transport.CurveClient
}

// ParseEndpoints splits a comma-separated list of Sentinel endpoints,
// tcp://host:port or ipc://path, and checks it: no empty entry, no entry
// twice, no other scheme. Spaces around an entry are dropped. The errors
// do not name a flag; callers add it.
func ParseEndpoints(list string) ([]string, error) {
	var out []string
	for i, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("entry %d of %q is empty", i+1, list)
		}
		if err := checkEndpoint(item); err != nil {
			return nil, err
		}
		if slices.Contains(out, item) {
			return nil, fmt.Errorf("%s is listed twice", item)
		}
		out = append(out, item)
	}
	return out, nil
}

// checkEndpoint accepts tcp://host:port and ipc://path.
func checkEndpoint(e string) error {
	if rest, ok := strings.CutPrefix(e, "tcp://"); ok {
		host, port, err := net.SplitHostPort(rest)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("%s: want tcp://host:port", e)
		}
		return nil
	}
	if rest, ok := strings.CutPrefix(e, "ipc://"); ok {
		if rest == "" {
			return fmt.Errorf("%s: want ipc://path", e)
		}
		return nil
	}
	return fmt.Errorf("%s: want a tcp:// or ipc:// endpoint", e)
}

// endpointsOf builds the worker's endpoints from its options: Endpoint
// parsed, each with Curve, or with Curve and its own key of SentinelKeys.
func endpointsOf(opts Options) ([]endpoint, error) {
	addrs, err := ParseEndpoints(opts.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	if len(opts.SentinelKeys) > 0 {
		if opts.Curve == nil {
			return nil, errors.New("SentinelKeys without Curve: the worker's own key pair is missing")
		}
		if len(opts.SentinelKeys) != len(addrs) {
			return nil, fmt.Errorf("%d Sentinel keys for %d endpoints: give one key for all, or one per endpoint",
				len(opts.SentinelKeys), len(addrs))
		}
	}
	out := make([]endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = endpoint{addr: a, curve: opts.Curve}
		if opts.Curve == nil {
			continue
		}
		if !strings.HasPrefix(a, "tcp://") {
			return nil, fmt.Errorf("endpoint %s: CURVE needs a tcp:// endpoint", a)
		}
		if len(opts.SentinelKeys) > 0 {
			c := *opts.Curve
			c.ServerKey = opts.SentinelKeys[i]
			out[i].curve = &c
		}
	}
	return out, nil
}

// failoverDialWindow is how long one endpoint may take to answer a dial
// before the next is tried: SentinelTimeout, within
// [minFailoverDialWindow, maxFailoverDialWindow].
func (w *Worker) failoverDialWindow() time.Duration {
	if w.opts.SentinelTimeout < 0 {
		return maxFailoverDialWindow
	}
	return min(max(w.opts.SentinelTimeout, minFailoverDialWindow), maxFailoverDialWindow)
}
