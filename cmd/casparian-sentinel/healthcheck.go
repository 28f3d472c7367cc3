package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/casparian/sentinel/config"
)

// healthcheck is `casparian-sentinel healthcheck`: it asks a running
// Sentinel's /healthz and returns nil only on 200. It exists for container
// healthchecks in images without a shell or curl (the compose stack's image
// holds nothing but the binaries). The address defaults to CASPARIAN_HTTP,
// the setting the Sentinel itself listens on, with a wildcard host
// (0.0.0.0, ::, "") replaced by the loopback address.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("casparian-sentinel healthcheck", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("http", getenv(config.EnvName("http")),
		"host:port of the Sentinel's HTTP server (env "+config.EnvName("http")+")")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: casparian-sentinel healthcheck [flags]\n\n"+
			"Exits 0 if the Sentinel's /healthz answers 200, 1 otherwise.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected argument %q", fs.Arg(0))
	}
	if *addr == "" {
		return errors.New("healthcheck: no address: give --http host:port or set " + config.EnvName("http"))
	}
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("healthcheck: --http %q: %w", *addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer func() { _ = res.Body.Close() }() // read from, not written: nothing to lose
	body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s: %s", url, res.Status, body)
	}
	fmt.Fprintf(stdout, "healthy: %s\n", body)
	return nil
}
