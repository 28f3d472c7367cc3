package httpapi

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"html/template"
	"net/http"

	"github.com/casparian/sentinel/internal/api"
)

// The console is one page of HTML, CSS and plain JavaScript (console/),
// embedded in the binary and served at GET /. The page holds no data: its
// script reads everything from /api/v1 with the tab's token and keeps it
// fresh from the event stream.
//
//go:embed console/console.html console/console.css console/console.js
var consoleFiles embed.FS

var (
	consoleTemplate = template.Must(template.ParseFS(consoleFiles, "console/console.html"))
	consoleCSS      = template.CSS(mustRead("console/console.css"))
	consoleJS       = template.JS(mustRead("console/console.js"))
)

func mustRead(name string) string {
	b, err := consoleFiles.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// consoleData is what console.html renders.
type consoleData struct {
	Nonce string // of the page's style and script (Content-Security-Policy)
	// Tokens is true when the API wants tokens: the console then asks for
	// one when it has none or the server refuses it.
	Tokens bool
	// Refused is why the server refused the token the page was opened
	// with, if it was.
	Refused string
	CSS     template.CSS
	JS      template.JS
}

// GET / serves the console.
func (srv *Server) consolePage(w http.ResponseWriter, _ *http.Request) {
	srv.renderConsole(w, http.StatusOK, "")
}

// renderConsole writes the console's page with code. Its style and script
// are inline and run under a Content-Security-Policy that allows them alone
// (by a nonce), allows no inline event handler or style attribute, and lets
// the script reach nothing but this server.
func (srv *Server) renderConsole(w http.ResponseWriter, code int, refused string) {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails
	// base64url: no '+' or '/', which the template would escape in the
	// attribute and leave unescaped in the header.
	d := consoleData{Nonce: base64.RawURLEncoding.EncodeToString(nonce), Tokens: srv.tokens != nil,
		Refused: refused, CSS: consoleCSS, JS: consoleJS}
	var buf bytes.Buffer
	if err := consoleTemplate.Execute(&buf, &d); err != nil {
		srv.log.Error().Err(err).Msg("render console")
		writeJSON(w, http.StatusInternalServerError, api.Error{Error: "render console: " + err.Error()})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+d.Nonce+"'; style-src 'nonce-"+d.Nonce+"'; "+
		"connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	// The page may have been opened with ?token=: no request may carry the
	// address elsewhere.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}
