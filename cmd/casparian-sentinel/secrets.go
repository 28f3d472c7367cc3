package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"

	"github.com/casparian/sentinel/config"
	"github.com/casparian/sentinel/internal/httpapi"
	"github.com/casparian/sentinel/transport"
)

// initSecrets creates, on a first start, the keys and tokens a secured
// deployment needs and that are not there yet (--init-secrets DIR): the
// Sentinel's CURVE key pair at --curve-secret-key, a worker key pair and a
// copy of the Sentinel's public key in DIR, the worker key in
// --authorized-workers, and an admin and a read token in --api-tokens. A
// file that exists is never changed, so keys survive restarts and an
// operator's own files win. Nothing secret is logged.
func initSecrets(cfg config.Config, log zerolog.Logger) error {
	dir := cfg.InitSecrets
	if dir == "" {
		return nil
	}
	if cfg.CurveSecretKey == "" || !strings.HasSuffix(cfg.CurveSecretKey, ".key") {
		return errors.New("--init-secrets: --curve-secret-key must name a .key file (its .pub is written beside it)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--init-secrets: %w", err)
	}
	log = log.With().Str("component", "init-secrets").Logger()

	if missing(cfg.CurveSecretKey) {
		pub, sec, err := transport.GenerateCurveKeyPair()
		if err != nil {
			return err
		}
		if _, _, err := transport.WriteCurveKeyPair(strings.TrimSuffix(cfg.CurveSecretKey, ".key"), pub, sec); err != nil {
			return fmt.Errorf("--init-secrets: the Sentinel's key: %w", err)
		}
		log.Info().Str("file", cfg.CurveSecretKey).Str("fingerprint", pub.Fingerprint()).Msg("created the Sentinel's CURVE key pair")
	}
	secret, err := transport.ReadCurveKeyFile(cfg.CurveSecretKey)
	if err != nil {
		return fmt.Errorf("--curve-secret-key: %w", err)
	}
	public := transport.CurvePublicKey(secret)
	// The copy for the workers follows the Sentinel's key, should an
	// operator replace it.
	pubCopy := filepath.Join(dir, "sentinel.pub")
	if err := writeIfChanged(pubCopy, "# the Sentinel's CurveZMQ public key (Z85)\n"+public.String()+"\n", 0o644); err != nil {
		return fmt.Errorf("--init-secrets: %w", err)
	}

	workerKey := filepath.Join(dir, "worker.key")
	if missing(workerKey) {
		pub, sec, err := transport.GenerateCurveKeyPair()
		if err != nil {
			return err
		}
		if _, _, err := transport.WriteCurveKeyPair(filepath.Join(dir, "worker"), pub, sec); err != nil {
			return fmt.Errorf("--init-secrets: the workers' key: %w", err)
		}
		log.Info().Str("file", workerKey).Str("fingerprint", pub.Fingerprint()).Msg("created the workers' CURVE key pair")
	}
	if cfg.AuthorizedWorkers != "" && missing(cfg.AuthorizedWorkers) {
		wsec, err := transport.ReadCurveKeyFile(workerKey)
		if err != nil {
			return fmt.Errorf("--init-secrets: %w", err)
		}
		body := "# CurveZMQ public keys of the workers allowed to connect, one per line: KEY [name]\n" +
			transport.CurvePublicKey(wsec).String() + " workers\n"
		if err := os.WriteFile(cfg.AuthorizedWorkers, []byte(body), 0o644); err != nil {
			return fmt.Errorf("--init-secrets: %w", err)
		}
		log.Info().Str("file", cfg.AuthorizedWorkers).Msg("authorized the workers' key")
	}
	if cfg.APITokens != "" && missing(cfg.APITokens) {
		admin, err := httpapi.NewToken()
		if err != nil {
			return err
		}
		read, err := httpapi.NewToken()
		if err != nil {
			return err
		}
		body := "# Operator API tokens: ROLE TOKEN [name]\nadmin " + admin + " operator\nread " + read + " viewer\n"
		if err := os.WriteFile(cfg.APITokens, []byte(body), 0o600); err != nil {
			return fmt.Errorf("--init-secrets: %w", err)
		}
		log.Info().Str("file", cfg.APITokens).Msg("created an admin and a read API token")
	}
	return nil
}

func missing(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist)
}

func writeIfChanged(path, body string, mode os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == body {
		return nil
	}
	return os.WriteFile(path, []byte(body), mode)
}
