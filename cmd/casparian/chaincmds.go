package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/casparian/sentinel/internal/api"
)

// Chaining by topic: plugins subscribe NAME PLUGIN:TOPIC, unsubscribe and
// subscriptions.

// isTopicRef reports whether subscribe's arguments name a topic
// (PLUGIN:TOPIC) rather than tags: a topic is one argument holding ':'.
// Tags and a topic together are left to the API to refuse.
func isTopicRef(args []string) bool {
	for _, a := range args {
		if strings.Contains(a, ":") {
			return true
		}
	}
	return false
}

func pluginsSubscribeTopic(ctx context.Context, c *cli, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("subscribe: give tags or one PLUGIN:TOPIC, not both (got %s)", strings.Join(args[1:], " "))
	}
	var res api.TopicSubscriptions
	raw, err := c.api.call(ctx, "POST", "/api/v1/plugins/"+url.PathEscape(args[0])+"/subscriptions",
		api.SubscribeRequest{Topic: args[1]}, &res)
	if err != nil {
		return err
	}
	return printTopics(c, raw, res, map[bool]string{true: "subscribed", false: "already subscribed"}[res.Changed])
}

func pluginsUnsubscribe(ctx context.Context, c *cli, args []string) error {
	var res api.TopicSubscriptions
	raw, err := c.api.call(ctx, "POST", "/api/v1/plugins/"+url.PathEscape(args[0])+"/subscriptions/remove",
		api.SubscribeRequest{Topic: args[1]}, &res)
	if err != nil {
		return err
	}
	return printTopics(c, raw, res, map[bool]string{true: "unsubscribed", false: "was not subscribed"}[res.Changed])
}

func pluginsSubscriptions(ctx context.Context, c *cli, args []string) error {
	var res api.TopicSubscriptions
	raw, err := c.api.get(ctx, "/api/v1/plugins/"+url.PathEscape(args[0])+"/subscriptions", &res)
	if err != nil {
		return err
	}
	return printTopics(c, raw, res, "")
}

// printTopics prints what a topic request did (done, if any), the plugin's
// topics and the answer's warning (on stderr).
func printTopics(c *cli, raw []byte, res api.TopicSubscriptions, done string) error {
	if c.opts.json {
		return c.printJSON(raw)
	}
	if done != "" {
		fmt.Fprintf(c.stdout, "plugin %s %s\n", res.Plugin, done)
	}
	if res.Warning != "" {
		fmt.Fprintf(c.stderr, "warning: %s\n", res.Warning)
	}
	if len(res.Subscriptions) == 0 {
		fmt.Fprintf(c.stdout, "plugin %s subscribes to no topic\n", res.Plugin)
		return nil
	}
	rows := make([][]string, len(res.Subscriptions))
	for i, s := range res.Subscriptions {
		rows[i] = []string{s.Topic, orDash(s.Producer), orDash(s.ProducerTopic), fmt.Sprint(s.Active)}
	}
	return c.table("TOPIC\tPRODUCER\tPRODUCER TOPIC\tACTIVE", rows)
}
