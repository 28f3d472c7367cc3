package main

import (
	"fmt"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/transport"
)

// loadCurve reads the Sentinel's CURVE secret key and the authorized worker
// keys; nil without --curve-secret-key (plaintext, for the original workers).
func loadCurve(cfg config.Config, log zerolog.Logger) (*transport.CurveServer, error) {
	if cfg.CurveSecretKey == "" {
		return nil, nil
	}
	secret, err := transport.ReadCurveKeyFile(cfg.CurveSecretKey)
	if err != nil {
		return nil, fmt.Errorf("--curve-secret-key: %w", err)
	}
	authorized, err := transport.ReadAuthorizedKeys(cfg.AuthorizedWorkers)
	if err != nil {
		return nil, fmt.Errorf("--authorized-workers: %w", err)
	}
	server := transport.NewCurveServer(secret, authorized)
	log.Info().Str("public_key", server.PublicKey().String()).Str("fingerprint", server.PublicKey().Fingerprint()).
		Int("authorized_keys", authorized.Len()).Msg("CURVE on: workers must present an authorized key")
	return server, nil
}

// reloadAuthorizedWorkers re-reads --authorized-workers (on SIGHUP). A file
// that no longer reads keeps the keys in force.
func reloadAuthorizedWorkers(cfg config.Config, server *transport.CurveServer, log zerolog.Logger) error {
	if server == nil {
		return nil
	}
	authorized, err := transport.ReadAuthorizedKeys(cfg.AuthorizedWorkers)
	if err != nil {
		return fmt.Errorf("--authorized-workers: %w", err)
	}
	server.SetAuthorized(authorized)
	log.Info().Int("authorized_keys", authorized.Len()).Msg("authorized worker keys reloaded")
	return nil
}

// warnInsecure logs what --insecure let through.
func warnInsecure(cfg config.Config, log zerolog.Logger) {
	if !cfg.Insecure {
		return
	}
	if cfg.CurveSecretKey == "" {
		log.Warn().Str("bind", cfg.Bind).Msg("--insecure: workers connect in plaintext; any peer that reaches this port can take jobs and report results")
	}
	if cfg.HTTP != "" && cfg.APITokens == "" {
		log.Warn().Str("http", cfg.HTTP).Msg("--insecure: the HTTP API has no tokens; anyone who reaches it can enqueue and cancel jobs")
	}
}
