package db

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/casparian/sentinel/job"
)

// The rules of chaining by topic (issue #20 part 4) that do not depend on
// the database, shared by SQLite (chain.go) and PostgreSQL.
//
// A subscription is a cf_plugin_subscription row whose topic_name names a
// producer's topic as "PRODUCER:TOPIC": every plugin has a topic "output",
// so a bare topic name would not say whose. The graph has an edge
// PRODUCER → plugin per active row; a subscription that would close a loop
// is refused.

// maxTopicName is cf_plugin_subscription.topic_name's VARCHAR(100).
const maxTopicName = 100

// ParseTopicRef reads "PRODUCER:TOPIC" (spaces around either part are
// trimmed). Both parts are required, neither may hold ':', a comma or
// white space, and the whole must fit topic_name; errors wrap
// job.ErrInvalid.
func ParseTopicRef(ref string) (producer, topic string, err error) {
	p, t, ok := strings.Cut(ref, ":")
	p, t = strings.TrimSpace(p), strings.TrimSpace(t)
	switch {
	case !ok || p == "" || t == "":
		return "", "", fmt.Errorf("topic %q: want PLUGIN:TOPIC, e.g. csv:output: %w", ref, job.ErrInvalid)
	case strings.ContainsAny(p+t, ":, \t\r\n"):
		return "", "", fmt.Errorf("topic %q: PLUGIN and TOPIC may not hold ':', ',' or white space: %w", ref, job.ErrInvalid)
	case len(p)+1+len(t) > maxTopicName:
		return "", "", fmt.Errorf("topic %q: longer than %d bytes: %w", ref, maxTopicName, job.ErrInvalid)
	}
	return p, t, nil
}

// CheckSubscription checks a subscription request of plugin to ref
// ("PRODUCER:TOPIC") and returns the plugin's name, the producer and ref in
// its canonical form.
func CheckSubscription(plugin, ref string) (name, producer, canonical string, err error) {
	if name, err = CheckPluginName(plugin); err != nil {
		return "", "", "", err
	}
	producer, topic, err := ParseTopicRef(ref)
	if err != nil {
		return "", "", "", err
	}
	return name, producer, TopicRef(producer, topic), nil
}

// TopicRef is the topic_name a subscription to producer's topic stores.
func TopicRef(producer, topic string) string { return producer + ":" + topic }

// SubscriptionOf reads a stored row; a topic_name that is not
// "PRODUCER:TOPIC" (written by another tool) has no producer and chains
// nothing.
func SubscriptionOf(plugin, topicName string, active *bool) job.TopicSubscription {
	s := job.TopicSubscription{Plugin: plugin, Topic: topicName, Active: active == nil || *active}
	s.Producer, s.ProducerTopic, _ = ParseTopicRef(topicName)
	return s
}

// ChainCycle returns the loop that an edge producer → plugin would close
// in the graph of the active subscriptions subs, as the plugins along it
// ("a", "b", "a"), or nil when there is none. A plugin subscribed to its
// own topic is the shortest loop.
func ChainCycle(subs []job.TopicSubscription, plugin, producer string) []string {
	next := map[string][]string{} // producer → subscribers
	for _, s := range subs {
		if s.Active && s.Producer != "" {
			next[s.Producer] = append(next[s.Producer], s.Plugin)
		}
	}
	// Breadth first from plugin: is producer reachable?
	from := map[string]string{plugin: ""}
	queue := []string{plugin}
	for len(queue) > 0 {
		at := queue[0]
		queue = queue[1:]
		if at == producer {
			path := []string{producer}
			for p := at; p != plugin; {
				p = from[p]
				path = append(path, p)
			}
			// path is producer … plugin backwards; the loop is
			// producer → plugin → … → producer.
			loop := []string{producer}
			for i := len(path) - 1; i >= 0; i-- {
				loop = append(loop, path[i])
			}
			return loop
		}
		for _, n := range next[at] {
			if _, seen := from[n]; !seen {
				from[n] = at
				queue = append(queue, n)
			}
		}
	}
	return nil
}

// CycleError is the refusal of a subscription that would close a loop.
func CycleError(plugin, ref string, loop []string) error {
	return fmt.Errorf("subscribing %s to %s would make a cycle: %s: %w", plugin, ref, strings.Join(loop, " → "), job.ErrInvalid)
}

// chainFresh is how long the subscription cache trusts what it read. This
// Sentinel forgets it at once when it changes a subscription; the bound is
// for another Sentinel's change (PostgreSQL): a completion within it may
// miss a just-added subscription or mark an artifact for a just-removed
// one (the chain step then finds no subscriber and queues nothing).
const chainFresh = 2 * time.Second

// ChainCache keeps the topics of the active subscriptions between
// completions, so that a completion without subscribers costs no query.
type ChainCache struct {
	mu     sync.Mutex
	topics map[string]bool // producer topics some active row subscribes to
	until  time.Time
}

// Topics returns the cached topics, or read's answer when the cache is
// empty or older than chainFresh.
func (c *ChainCache) Topics(read func() (map[string]bool, error)) (map[string]bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if now.Before(c.until) {
		return c.topics, nil
	}
	t, err := read()
	if err != nil {
		return nil, err
	}
	c.topics, c.until = t, now.Add(chainFresh)
	return t, nil
}

// Forget drops what the cache holds.
func (c *ChainCache) Forget() {
	c.mu.Lock()
	c.until = time.Time{}
	c.mu.Unlock()
}

// ChainTopics collects the producer topics of subscriptions (nil when
// there is none).
func ChainTopics(subs []job.TopicSubscription) map[string]bool {
	var out map[string]bool
	for _, s := range subs {
		if s.Active && s.Producer != "" {
			if out == nil {
				out = map[string]bool{}
			}
			out[s.ProducerTopic] = true
		}
	}
	return out
}

// ChainMark is one artifact of a completed job that may have subscribers:
// the completion writes it as a sentinel_chain_pending row when the job's
// plugin has a subscription to the artifact's topic.
type ChainMark struct {
	JobID, Attempt, Index int64
	Topic, URI            string
}

// ChainMarks lists the artifacts of the completed conclusions (outcome
// job.OutcomeCompleted) whose topic is in topics and that name a URI.
func ChainMarks(cs []job.Conclusion, out []job.Outcome, topics map[string]bool) []ChainMark {
	if len(topics) == 0 {
		return nil
	}
	var marks []ChainMark
	for i, c := range cs {
		if out != nil && out[i] != job.OutcomeCompleted || c.Kind != job.ConcludeComplete {
			continue
		}
		for n, a := range c.Artifacts {
			if topics[a["topic"]] && a["uri"] != "" {
				marks = append(marks, ChainMark{JobID: c.Ref.JobID, Attempt: c.Ref.Attempt, Index: int64(n),
					Topic: a["topic"], URI: a["uri"]})
			}
		}
	}
	return marks
}

// ChainBatch bounds the pending artifacts one chain step reads.
const ChainBatch = 64
