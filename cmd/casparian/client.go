package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/casparian/sentinel/internal/api"
)

// client calls the Sentinel's HTTP API.
type client struct {
	base  string // scheme://host[:port], no trailing slash
	token string // sent as Authorization: Bearer when not ""
	http  *http.Client
}

func newClient(server, token string, timeout time.Duration) (*client, error) {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--server %q: want a URL such as %s", server, defaultServer)
	}
	return &client{base: strings.TrimRight(u.String(), "/"), token: token, http: &http.Client{Timeout: timeout}}, nil
}

// apiError is an error answer of the API.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.msg, e.status) }

// tokenError is a 401, or a 403 for a read-only token: the token is
// missing, unknown, or not allowed to do this.
type tokenError struct{ apiError }

func (e *tokenError) Error() string {
	return fmt.Sprintf("the Sentinel refused the token: %s (HTTP %d); set --token or CASPARIAN_TOKEN", e.msg, e.status)
}

// unreachableError says the Sentinel could not be reached at all.
type unreachableError struct {
	base string
	err  error
}

func (e *unreachableError) Error() string {
	reason := e.err.Error()
	var op *net.OpError
	switch {
	case errors.Is(e.err, syscall.ECONNREFUSED):
		reason = "connection refused"
	case errors.As(e.err, &op) && op.Timeout(), errors.Is(e.err, context.DeadlineExceeded):
		reason = "no answer in time"
	}
	return fmt.Sprintf("cannot reach the Sentinel at %s: %s\n"+
		"Is casparian-sentinel running with --http? Point --server (or CASPARIAN_SERVER) at its address.", e.base, reason)
}

func (e *unreachableError) Unwrap() error { return e.err }

// do sends one request with an optional JSON body and returns the answer's
// body; answers of 400 and above become an *apiError with the server's
// message.
func (c *client) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if method != http.MethodGet {
		// The Sentinel refuses a POST of any other type, even an empty one.
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, &unreachableError{base: c.base, err: err}
	}
	defer func() { _ = res.Body.Close() }() // read to the end or given up on
	raw, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, &unreachableError{base: c.base, err: err}
	}
	if res.StatusCode >= 400 {
		var e api.Error
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
			if e.Error == "" {
				e.Error = http.StatusText(res.StatusCode)
			}
		}
		ae := apiError{status: res.StatusCode, msg: e.Error}
		if res.StatusCode == http.StatusUnauthorized || (res.StatusCode == http.StatusForbidden && e.Reason == "forbidden") {
			return nil, &tokenError{ae}
		}
		return nil, &ae
	}
	return raw, nil
}

// get decodes the answer to a GET into out and returns the raw body too.
func (c *client) get(ctx context.Context, path string, out any) ([]byte, error) {
	return c.call(ctx, "GET", path, nil, out)
}

func (c *client) call(ctx context.Context, method, path string, body, out any) ([]byte, error) {
	raw, err := c.do(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("unexpected answer from %s%s: %v", c.base, path, err)
		}
	}
	return raw, nil
}
