package httpapi

import (
	"fmt"
	"net/http"

	"github.com/casparian/sentinel/internal/api"
	"github.com/casparian/sentinel/job"
)

// Chaining by topic (issue #20 part 4): a plugin's subscriptions to other
// plugins' topics. Adding one is POST /api/v1/plugins/{name}/subscriptions
// {"topic": "PRODUCER:TOPIC"} (api.go's subscribe).

// lineageWarning is the answer's warning when the Sentinel records no
// lineage: chained jobs run, but nothing shows where their outputs came
// from.
const lineageWarning = "this Sentinel runs without --lineage: chained jobs run, but their outputs are not recorded, " +
	"so the original file's lineage will not list them"

// GET /api/v1/plugins/{name}/subscriptions
func (srv *Server) topicSubscriptions(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := srv.ctx(r)
	defer cancel()
	res, err := srv.s.TopicSubscriptions(ctx, r.PathValue("name"))
	srv.topicAnswer(w, r, res, err)
}

// POST /api/v1/plugins/{name}/subscriptions/remove {"topic": "PRODUCER:TOPIC"}
func (srv *Server) unsubscribeTopic(w http.ResponseWriter, r *http.Request) {
	var req api.SubscribeRequest
	if err := readJSON(w, r, &req); err != nil {
		srv.fail(w, r, err)
		return
	}
	if len(req.Tags) > 0 {
		srv.fail(w, r, fmt.Errorf("only topic subscriptions can be removed, not tags: %w", job.ErrInvalid))
		return
	}
	ctx, cancel := srv.ctx(r)
	defer cancel()
	res, err := srv.s.UnsubscribeTopic(ctx, r.PathValue("name"), req.Topic)
	srv.topicAnswer(w, r, res, err)
}

func (srv *Server) topicAnswer(w http.ResponseWriter, r *http.Request, res job.TopicSubscriptions, err error) {
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := api.TopicSubscriptions{Plugin: res.Plugin, Changed: res.Changed, Lineage: res.Lineage,
		Subscriptions: make([]api.TopicSubscription, len(res.Subscriptions))}
	for i, s := range res.Subscriptions {
		out.Subscriptions[i] = api.TopicSubscription{Topic: s.Topic, Producer: s.Producer, ProducerTopic: s.ProducerTopic, Active: s.Active}
	}
	if !res.Lineage && len(res.Subscriptions) > 0 {
		out.Warning = lineageWarning
	}
	writeJSON(w, http.StatusOK, out)
}
