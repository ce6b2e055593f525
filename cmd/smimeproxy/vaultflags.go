package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// vaultFlags are the Vault options shared by keys, decrypt --user, serve, demo and doctor. Connection settings
// fall back to Vault's own environment (VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, VAULT_CAPATH, VAULT_NAMESPACE)
// and ~/.vault-token. There is deliberately no token flag: a token on the command line is visible to every
// local user in the process list.
type vaultFlags struct {
	addr, cacert, namespace       string
	kvMount, prefix, transitMount string
	user                          string
	roleID, secretIDFile          string
	secretIDEnv, approleMount     string
	timeout, cacheTTL             time.Duration
	cacheSize                     int
	allowPlaintext                bool

	// logger, when set before open, receives the store's events (login, renewal, fallback to cached keys);
	// default: warnings and errors as text on stderr.
	logger *slog.Logger
	// metrics, when set before open, counts failed Vault requests (vaultcfg.Config.Metrics).
	metrics vaultcfg.Metrics
}

// addVaultFlags registers the Vault flags on fs.
func addVaultFlags(fs *flag.FlagSet) *vaultFlags {
	v := &vaultFlags{}
	fs.StringVar(&v.addr, "vault-addr", "", "Vault address (default $VAULT_ADDR)")
	fs.BoolVar(&v.allowPlaintext, "vault-allow-plaintext", false, "permit an http:// Vault address that is not loopback (the token and keys cross the network in clear)")
	fs.StringVar(&v.cacert, "vault-cacert", "", "PEM file of the CA that signed Vault's TLS certificate (default $VAULT_CACERT)")
	fs.StringVar(&v.namespace, "vault-namespace", "", "Vault Enterprise namespace (default $VAULT_NAMESPACE)")
	fs.StringVar(&v.kvMount, "vault-kv-mount", vaultcfg.DefaultKVMount, "KV version 2 mount holding the keys")
	fs.StringVar(&v.prefix, "vault-prefix", vaultcfg.DefaultPrefix, "path under the KV mount: keys live at <prefix>/<user>/<key-id>")
	fs.StringVar(&v.transitMount, "vault-transit-mount", vaultcfg.DefaultTransitMount, "Transit mount for keys imported with --transit")
	fs.StringVar(&v.user, "vault-user", "", "the one user (key store name) this workstation's proxy serves, with a token from 'smimeproxy keys policy --user U' or --templated: the proxy's TLS certificate and APPEND-marker key are then kept under that user's keys, and other users are refused (default: all users, token from 'keys policy')")
	fs.StringVar(&v.approleMount, "vault-approle-mount", vaultcfg.DefaultAppRoleMount, "AppRole auth mount")
	fs.StringVar(&v.roleID, "vault-approle-role-id", "", "log in with AppRole using this role id (instead of $VAULT_TOKEN or ~/.vault-token)")
	fs.StringVar(&v.secretIDFile, "vault-approle-secret-id-file", "", "file holding the AppRole secret id (re-read at every login)")
	fs.StringVar(&v.secretIDEnv, "vault-approle-secret-id-env", "", "name of the environment variable holding the AppRole secret id")
	fs.DurationVar(&v.timeout, "vault-timeout", vaultcfg.DefaultTimeout, "limit for one Vault request")
	fs.DurationVar(&v.cacheTTL, "vault-cache-ttl", vaultcfg.DefaultCacheTTL, "how long keys read from Vault are reused without asking again (negative: no cache)")
	fs.IntVar(&v.cacheSize, "vault-cache-size", vaultcfg.DefaultCacheSize, "at most this many keys are cached")
	return v
}

// config builds the vaultcfg.Config: flags first, then Vault's environment variables.
func (v *vaultFlags) config(env *cmdEnv) (vaultcfg.Config, error) {
	cfg := vaultcfg.ConfigFromEnv(env.getenv)
	if v.addr != "" {
		cfg.Addr = v.addr
	}
	if v.cacert != "" {
		cfg.CACert = v.cacert
	}
	cfg.AllowPlaintext = v.allowPlaintext
	if v.namespace != "" {
		cfg.Namespace = v.namespace
	}
	cfg.KVMount, cfg.Prefix, cfg.TransitMount, cfg.User = v.kvMount, v.prefix, v.transitMount, v.user
	cfg.Timeout, cfg.CacheTTL, cfg.CacheSize = v.timeout, v.cacheTTL, v.cacheSize
	switch {
	case v.roleID != "":
		ar := &vaultcfg.AppRole{Mount: v.approleMount, RoleID: v.roleID, SecretIDFile: v.secretIDFile}
		switch {
		case v.secretIDFile != "" && v.secretIDEnv != "":
			return cfg, errors.New("vault: give only one of --vault-approle-secret-id-file and --vault-approle-secret-id-env")
		case v.secretIDEnv != "":
			ar.SecretID = env.getenv(v.secretIDEnv)
			if ar.SecretID == "" {
				return cfg, fmt.Errorf("vault: environment variable %s (--vault-approle-secret-id-env) is empty", v.secretIDEnv)
			}
		case v.secretIDFile == "":
			return cfg, errors.New("vault: --vault-approle-role-id needs --vault-approle-secret-id-file or --vault-approle-secret-id-env")
		}
		cfg.AppRole = ar
	case v.secretIDFile != "" || v.secretIDEnv != "":
		return cfg, errors.New("vault: an AppRole secret id needs --vault-approle-role-id")
	}
	cfg.Logger = v.logger
	cfg.Metrics = v.metrics
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return cfg, nil
}

// open connects to Vault and returns the key store and a function that releases it (stops token renewal).
func (v *vaultFlags) open(ctx context.Context, env *cmdEnv) (keystore.Store, func(), error) {
	s, err := v.openVault(ctx, env)
	if err != nil {
		return nil, func() {}, err
	}
	return s, s.Close, nil
}

// openVault is open returning the concrete store (for Transit-specific calls).
func (v *vaultFlags) openVault(ctx context.Context, env *cmdEnv) (*vaultcfg.Store, error) {
	cfg, err := v.config(env)
	if err != nil {
		return nil, err
	}
	return vaultcfg.Open(ctx, cfg)
}
