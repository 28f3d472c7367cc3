package httpapi

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/casparian/sentinel/internal/api"
)

// Access is what a route asks of a request.
type Access int

// The access levels of the routes.
const (
	// Public routes (GET /healthz) are answered to anyone: container
	// health checks carry no token.
	Public Access = iota
	// Read routes want a read or admin token.
	Read
	// Admin routes (every POST, /debug/pprof) want an admin token.
	Admin
)

func (a Access) String() string {
	return [...]string{"public", "read", "admin"}[a]
}

// Refusal reasons, the label of casparian_http_refused_total.
const (
	reasonNoToken     = "no_token"
	reasonBadToken    = "bad_token"
	reasonForbidden   = "forbidden"
	reasonContentType = "bad_content_type"
	reasonCrossOrigin = "cross_origin"
	reasonBadHost     = "bad_host"
)

var refusalReasons = []string{reasonNoToken, reasonBadToken, reasonForbidden, reasonContentType, reasonCrossOrigin, reasonBadHost}

func newRefusedCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "casparian_http_refused_total",
		Help: "HTTP requests refused before reaching the API, by reason: no_token, bad_token, forbidden (read token on an admin route), bad_content_type, cross_origin, bad_host (not a loopback Host without tokens).",
	}, []string{"reason"})
	for _, r := range refusalReasons {
		c.WithLabelValues(r) // every reason is exported from the start, at 0
	}
	return c
}

// guard wraps a route's handler with the checks every request but a public
// one passes, in this order:
//
//  1. without tokens, the Host header must be a loopback name, so that a
//     web page whose DNS name is rebound to 127.0.0.1 is refused;
//  2. a request a browser marks as cross-site, or whose Origin is not the
//     Host it was sent to, is refused (no CSRF, also without tokens);
//  3. with tokens, a Bearer token of the route's access level;
//  4. a request that may change state (any method but GET and HEAD) must
//     say Content-Type: application/json, which a cross-site HTML form
//     cannot send without a CORS preflight that this server never allows.
//
// No cookies are read or set anywhere: a browser has no ambient credential
// to send.
func (srv *Server) guard(rt Endpoint, next http.Handler) http.Handler {
	if rt.Access == Public {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if srv.tokens == nil && !srv.anyHost && !loopbackHost(r.Host) {
			srv.refuse(w, r, rt, http.StatusForbidden, reasonBadHost, fmt.Sprintf(
				"Host %q is not a loopback name: without --api-tokens the Sentinel answers only requests to localhost, 127.0.0.1 or [::1]", r.Host))
			return
		}
		if msg := crossSite(r); msg != "" {
			srv.refuse(w, r, rt, http.StatusForbidden, reasonCrossOrigin, msg)
			return
		}
		if srv.tokens != nil {
			presented, ok := bearer(r)
			if !ok && rt.TokenInQuery {
				presented = r.URL.Query().Get("token")
				ok = presented != ""
			}
			if !ok {
				srv.refuse(w, r, rt, http.StatusUnauthorized, reasonNoToken,
					"this endpoint needs an API token: send Authorization: Bearer TOKEN")
				return
			}
			tok, found := srv.tokens.match(presented)
			if !found {
				srv.refuse(w, r, rt, http.StatusUnauthorized, reasonBadToken, "the API token is not valid")
				return
			}
			if rt.Access == Admin && tok.Role != RoleAdmin {
				srv.refuse(w, r, rt, http.StatusForbidden, reasonForbidden,
					"this endpoint needs an admin token; the token given is read-only")
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			ct := r.Header.Get("Content-Type")
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
				srv.refuse(w, r, rt, http.StatusUnsupportedMediaType, reasonContentType,
					fmt.Sprintf("Content-Type must be application/json, got %q", ct))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a request the guard stopped, logs it (never the token nor
// the query, which may hold one) and counts it.
func (srv *Server) refuse(w http.ResponseWriter, r *http.Request, rt Endpoint, code int, reason, msg string) {
	srv.refused.WithLabelValues(reason).Inc()
	srv.log.Warn().Str("route", rt.Pattern).Str("method", r.Method).Str("path", r.URL.Path).
		Str("remote", r.RemoteAddr).Str("reason", reason).Int("status", code).Msg("request refused")
	if code == http.StatusUnauthorized {
		challenge := `Bearer realm="casparian"`
		if reason == reasonBadToken {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	if rt.page && code == http.StatusUnauthorized && acceptsHTML(r) {
		// A browser opening the console without a token (or after a
		// reload, the token being kept in the tab) gets the console, whose
		// script uses the tab's token or asks for one, instead of a JSON
		// error. The page holds no data: everything it shows it fetches
		// with the token.
		srv.renderConsole(w, code, msg)
		return
	}
	writeJSON(w, code, api.Error{Error: msg, Reason: reason})
}

// bearer returns the token of an Authorization: Bearer header. A header of
// another scheme counts as a token that does not match.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, token, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", true // matches no token: every token is at least MinTokenLength long
	}
	return strings.TrimSpace(token), true
}

// crossSite says why a request is cross-site, or "" when it is not: the
// browser's Sec-Fetch-Site says so, or its Origin names another host than
// the one the request was sent to. Clients other than browsers (the CLI,
// curl, Prometheus) send neither header.
func crossSite(r *http.Request) string {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return "cross-site requests are refused (Sec-Fetch-Site: cross-site)"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !strings.EqualFold(withoutDefaultPort(u.Host, u.Scheme), withoutDefaultPort(r.Host, requestScheme(r))) {
		return fmt.Sprintf("cross-origin requests are refused: Origin %q is not this server (Host %q)", origin, r.Host)
	}
	return ""
}

func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// withoutDefaultPort drops :80 from an http host and :443 from an https one,
// so that Origin http://h and Host h:80 compare equal.
func withoutDefaultPort(host, scheme string) string {
	if (scheme == "http" && strings.HasSuffix(host, ":80")) || (scheme == "https" && strings.HasSuffix(host, ":443")) {
		return host[:strings.LastIndexByte(host, ':')]
	}
	return host
}

// loopbackHost reports whether a Host header names this machine through
// its loopback interface: localhost, 127.x.x.x or [::1], with or without a
// port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func acceptsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}
