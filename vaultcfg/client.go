package vaultcfg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// client is an authenticated Vault client with error classification and, for AppRole, token renewal.
type client struct {
	api    *api.Client
	addr   string
	mounts []string // configured mounts, for error messages
	cfg    Config
	log    *slog.Logger

	loginMu sync.Mutex // serializes AppRole logins

	stop context.CancelFunc
	done chan struct{}
}

// ErrPlaintextVault is returned for an http:// Vault address on a host that is not loopback without
// Config.AllowPlaintext.
var ErrPlaintextVault = errors.New("vaultcfg: vault address is plain http to a host that is not loopback: the token and private keys would cross the network in clear (use https://, or allow it explicitly with --vault-allow-plaintext)")

// checkTransport refuses a plaintext Vault address that leaves the machine.
func checkTransport(addr string, allowPlaintext bool) error {
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return fmt.Errorf("vaultcfg: vault address %q: want http(s)://host[:port]", addr)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
	default:
		return fmt.Errorf("vaultcfg: vault address %q: scheme must be https or http", addr)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback() || allowPlaintext {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrPlaintextVault, addr)
}

// newClient builds the API client from cfg (defaults applied) and authenticates. The token comes from
// cfg.Token, else an AppRole login, else cfg.TokenFile.
func newClient(ctx context.Context, cfg Config) (*client, error) {
	if cfg.Addr == "" {
		return nil, errors.New("vaultcfg: no vault address: set VAULT_ADDR or --vault-addr")
	}
	if err := checkTransport(cfg.Addr, cfg.AllowPlaintext); err != nil {
		return nil, err
	}
	ac := api.DefaultConfig()
	if ac.Error != nil {
		return nil, fmt.Errorf("vaultcfg: vault client configuration from the environment: %s", oneLine([]string{ac.Error.Error()}))
	}
	ac.Address = cfg.Addr
	ac.Timeout = cfg.Timeout
	ac.MaxRetries = 1
	ac.MinRetryWait = 200 * time.Millisecond
	ac.MaxRetryWait = 500 * time.Millisecond
	ac.CheckRetry = checkRetry
	if cfg.CACert != "" || cfg.CAPath != "" {
		if err := ac.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert, CAPath: cfg.CAPath}); err != nil {
			where := cfg.CACert
			if where == "" {
				where = cfg.CAPath
			}
			return nil, fmt.Errorf("vaultcfg: vault CA certificate %s: %s", where, oneLine([]string{err.Error()}))
		}
	}
	a, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("vaultcfg: vault client: %s", oneLine([]string{err.Error()}))
	}
	// api.NewClient picks up VAULT_TOKEN and VAULT_NAMESPACE from the process environment; only cfg counts.
	a.ClearToken()
	a.ClearNamespace()
	if cfg.Namespace != "" {
		a.SetNamespace(cfg.Namespace)
	}
	c := &client{api: a, addr: cfg.Addr, cfg: cfg, log: cfg.Logger, mounts: []string{cfg.KVMount, cfg.TransitMount}}

	switch {
	case cfg.AppRole != nil:
		secret, err := c.login(ctx)
		if err != nil {
			return nil, err
		}
		watchCtx, cancel := context.WithCancel(context.Background())
		c.stop, c.done = cancel, make(chan struct{})
		go c.keepLoggedIn(watchCtx, secret)
		return c, nil
	case cfg.Token != "":
		a.SetToken(cfg.Token)
	default:
		if cfg.TokenFile == "" {
			return nil, errors.New("vaultcfg: no vault token: set VAULT_TOKEN, run 'vault login', or configure AppRole")
		}
		b, err := os.ReadFile(cfg.TokenFile)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("vaultcfg: no vault token: set VAULT_TOKEN, run 'vault login' (writes %s), or configure AppRole", cfg.TokenFile)
		}
		if err != nil {
			return nil, fmt.Errorf("vaultcfg: reading vault token file %s: %w", cfg.TokenFile, errors.Unwrap(err))
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return nil, fmt.Errorf("vaultcfg: vault token file %s is empty", cfg.TokenFile)
		}
		a.SetToken(tok)
	}
	// Check the token now, so a bad token is reported once with a clear message rather than on first use.
	self, err := a.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		err = c.classify(err, "look up token at", "auth/token/lookup-self")
		if errors.Is(err, ErrPermissionDenied) {
			return nil, &vaultError{class: ErrPermissionDenied, status: 403, msg: fmt.Sprintf("vaultcfg: vault at %s rejected the token: invalid or expired", c.addr)}
		}
		return nil, err
	}
	// A renewable token with a TTL (e.g. a periodic token, or what 'vault login' gives) is kept alive.
	if renewable, _ := self.TokenIsRenewable(); renewable {
		if ttl, _ := self.TokenTTL(); ttl > 0 {
			watchCtx, cancel := context.WithCancel(context.Background())
			c.stop, c.done = cancel, make(chan struct{})
			go c.keepRenewing(watchCtx, a.Token(), ttl)
		}
	}
	return c, nil
}

// keepRenewing renews a token given by the user (VAULT_TOKEN, ~/.vault-token) with an api.LifetimeWatcher
// until ctx ends. When renewal fails (Vault unreachable for a while) it tries again after a pause as long as
// the token is still valid; a token at its maximum lifetime or revoked cannot be helped: that is logged.
func (c *client) keepRenewing(ctx context.Context, token string, ttl time.Duration) {
	defer close(c.done)
	for ctx.Err() == nil {
		c.watch(ctx, &api.Secret{Auth: &api.SecretAuth{ClientToken: token, Renewable: true, LeaseDuration: int(ttl / time.Second)}})
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(max(ttl/3, time.Second), 30*time.Second)):
		}
		self, err := c.api.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			if errors.Is(c.classify(err, "look up token at", "auth/token/lookup-self"), ErrPermissionDenied) {
				c.log.Error("vault token expired or revoked: restart with a new token (vault login) or use AppRole")
				return
			}
			continue // unreachable: try again
		}
		if renewable, _ := self.TokenIsRenewable(); !renewable {
			return
		}
		if ttl, _ = self.TokenTTL(); ttl <= 0 {
			return
		}
	}
}

// close stops token renewal.
func (c *client) close() {
	if c.stop != nil {
		c.stop()
		<-c.done
		c.stop = nil
	}
}

// login logs in with AppRole (auth/<mount>/login) and installs the new token.
func (c *client) login(ctx context.Context) (*api.Secret, error) {
	ar := c.cfg.AppRole
	secretID := ar.SecretID
	if ar.SecretIDFile != "" {
		b, err := os.ReadFile(ar.SecretIDFile)
		if err != nil {
			return nil, fmt.Errorf("vaultcfg: reading approle secret id file %s: %w", ar.SecretIDFile, errors.Unwrap(err))
		}
		secretID = strings.TrimSpace(string(b))
	}
	if ar.RoleID == "" || secretID == "" {
		return nil, errors.New("vaultcfg: approle needs a role id and a secret id")
	}
	// Log in without the current (maybe expired) token.
	lc, err := c.api.Clone()
	if err != nil {
		return nil, fmt.Errorf("vaultcfg: vault client: %s", oneLine([]string{err.Error()}))
	}
	lc.ClearToken()
	path := "auth/" + ar.Mount + "/login"
	secret, err := lc.Logical().WriteWithContext(ctx, path, map[string]any{"role_id": ar.RoleID, "secret_id": secretID})
	if err != nil {
		err = c.classify(err, "log in at", path)
		if errors.Is(err, ErrVault) {
			// Vault answers 400 "invalid role or secret ID" for bad credentials.
			return nil, fmt.Errorf("%w (check the approle role id and secret id)", err)
		}
		return nil, err
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%w: log in at %s: no token in the answer", ErrVault, path)
	}
	c.api.SetToken(secret.Auth.ClientToken)
	c.log.Info("vault login", "method", "approle", "mount", ar.Mount, "ttl", time.Duration(secret.Auth.LeaseDuration)*time.Second, "renewable", secret.Auth.Renewable)
	return secret, nil
}

// keepLoggedIn renews the AppRole token with an api.LifetimeWatcher and logs in again when it can no longer be
// renewed (max TTL reached, revoked, Vault restarted), until ctx ends.
func (c *client) keepLoggedIn(ctx context.Context, secret *api.Secret) {
	defer close(c.done)
	for ctx.Err() == nil {
		if secret.Auth.Renewable {
			c.watch(ctx, secret)
		} else {
			// Not renewable: log in again at two thirds of its lifetime.
			wait := time.Duration(secret.Auth.LeaseDuration) * time.Second * 2 / 3
			if wait <= 0 {
				return // a token without TTL (e.g. a root token) never needs a new login
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		for attempt := 0; ctx.Err() == nil; attempt++ {
			c.loginMu.Lock()
			s, err := c.login(ctx)
			c.loginMu.Unlock()
			if err == nil {
				secret = s
				break
			}
			c.count(err)
			backoff := min(time.Second<<min(attempt, 5), 30*time.Second)
			c.log.Warn("vault login failed, retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// watch runs one LifetimeWatcher until it gives up or ctx ends.
func (c *client) watch(ctx context.Context, secret *api.Secret) {
	w, err := c.api.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		c.log.Warn("vault token renewal not possible", "err", oneLine([]string{err.Error()}))
		return
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.DoneCh():
			if err != nil {
				c.log.Warn("vault token renewal stopped", "err", c.classify(err, "renew token at", "auth/token/renew-self"))
			} else {
				c.log.Info("vault token reached its maximum lifetime")
			}
			return
		case r := <-w.RenewCh():
			ttl := time.Duration(0)
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				ttl = time.Duration(r.Secret.Auth.LeaseDuration) * time.Second
			}
			c.log.Info("vault token renewed", "ttl", ttl)
		}
	}
}

// do runs op (doUncounted) and counts its failure (count).
func (c *client) do(ctx context.Context, op func() error) error {
	err := c.doUncounted(ctx, op)
	c.count(err)
	return err
}

// count reports a failed Vault request to Config.Metrics: no answer (ErrUnreachable, timeouts included, but not
// a caller that went away), sealed, permission denied, a missing mount, or an error of Vault itself (HTTP 5xx,
// an answer that does not parse). Answers about the request itself (other 4xx: a key that is not there, a
// ciphertext Transit rejects) are not failures of Vault.
func (c *client) count(err error) {
	if err == nil || c.cfg.Metrics == nil || errors.Is(err, context.Canceled) {
		return
	}
	var ve *vaultError
	if errors.As(err, &ve) && ve.class == ErrVault && ve.status >= 400 && ve.status < 500 {
		return
	}
	c.cfg.Metrics.VaultError()
}

// doUncounted runs op; with AppRole, a permission-denied answer caused by an expired token (the renewer lost
// the race, or Vault was down past the token's TTL) leads to one new login and one retry. A genuine permission
// problem costs one token lookup, which succeeds, so no login follows.
func (c *client) doUncounted(ctx context.Context, op func() error) error {
	before := c.api.Token()
	err := op()
	if err == nil || c.cfg.AppRole == nil || !errors.Is(err, ErrPermissionDenied) {
		return err
	}
	c.loginMu.Lock()
	retry := c.api.Token() != before // another goroutine logged in meanwhile
	if !retry {
		if _, lerr := c.api.Auth().Token().LookupSelfWithContext(ctx); lerr != nil {
			if _, lerr := c.login(ctx); lerr == nil {
				retry = true
			}
		}
	}
	c.loginMu.Unlock()
	if !retry {
		return err
	}
	return op()
}
