package vaultcfg

import (
	"log/slog"
	"path/filepath"
	"time"
)

// Defaults of Config.
const (
	DefaultKVMount      = "secret"
	DefaultPrefix       = "smimeproxy"
	DefaultTransitMount = "transit"
	DefaultAppRoleMount = "approle"
	// DefaultTimeout bounds one Vault request (including client retries): long enough for a loaded Vault, short
	// enough that a mail client waiting on a FETCH gets an answer.
	DefaultTimeout = 15 * time.Second
	// DefaultCacheTTL is how long parsed keys of a user are used without asking Vault again.
	DefaultCacheTTL = 5 * time.Minute
	// DefaultCacheMaxStale is how long expired cache entries may still serve a lookup while Vault is unreachable
	// or sealed.
	DefaultCacheMaxStale = time.Hour
	// DefaultCacheSize bounds the number of keys held in the cache (across users).
	DefaultCacheSize = 1000
)

// Config says how to reach Vault and where keys live. The zero value of each optional field means its default.
type Config struct {
	// Addr is Vault's address, e.g. https://vault.example.com:8200 (VAULT_ADDR). Required.
	Addr string
	// AllowPlaintext permits an http:// Addr on a host that is not loopback: the token and the private keys
	// then cross the network in clear. Off by default.
	AllowPlaintext bool
	// Token authenticates to Vault (VAULT_TOKEN). When empty and AppRole is nil, the token is read from
	// TokenFile.
	Token string
	// TokenFile is the file `vault login` writes, normally ~/.vault-token.
	TokenFile string
	// CACert and CAPath verify Vault's TLS certificate (VAULT_CACERT, VAULT_CAPATH); empty means system roots.
	CACert, CAPath string
	// Namespace is the Vault Enterprise namespace (VAULT_NAMESPACE); empty for none.
	Namespace string
	// AppRole, when set, logs in with AppRole instead of using Token, renews the token and logs in again when it
	// expires.
	AppRole *AppRole

	// KVMount is the KV version 2 mount holding the keys; default "secret".
	KVMount string
	// Prefix is the path under KVMount; a key lives at <Prefix>/<user>/<key-id>. Default "smimeproxy".
	Prefix string
	// TransitMount is the Transit mount for keys stored with PutOptions.Transit; default "transit".
	TransitMount string
	// User, when set, makes the Store serve that one user (a workstation's own proxy, whose token has UserPolicy
	// or TemplatedPolicy): the proxy's own state (MarkerKey, ReadTLSCert, WriteTLSCert) lives in the user's
	// subtree at <Prefix>/<User>/.proxy/ and <Prefix>/<User>/.tls/, and Lookup refuses other users. Empty: a
	// proxy for all users (ProxyPolicy) with the shared state at <Prefix>/.proxy/ and <Prefix>/.tls/.
	User string

	// Timeout bounds each Vault request; default DefaultTimeout.
	Timeout time.Duration
	// CacheTTL, CacheMaxStale and CacheSize tune the key cache; see the Default* constants. A negative CacheTTL
	// disables the cache.
	CacheTTL, CacheMaxStale time.Duration
	CacheSize               int

	// Logger receives login, renewal and fallback events (never tokens, secret ids or key material); nil
	// discards them.
	Logger *slog.Logger
	// Metrics counts failed Vault requests; nil counts nothing.
	Metrics Metrics
}

// Metrics receives a count of every Vault request that failed (client.count says which do): no answer in
// time, sealed, permission denied, a missing mount, an error of Vault itself. observe.Metrics implements it.
// It must be safe for concurrent use.
type Metrics interface {
	VaultError()
}

// AppRole is the AppRole auth method's credentials (Vault's auth/approle/login).
type AppRole struct {
	// Mount is the auth mount path; default "approle".
	Mount string
	// RoleID is the role's role_id (not a secret by itself).
	RoleID string
	// SecretID is the secret_id; ignored when SecretIDFile is set.
	SecretID string
	// SecretIDFile is read at every login, so a rotated secret id is picked up.
	SecretIDFile string
}

// LogValue implements slog.LogValuer without the token or the AppRole secret id.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("addr", c.Addr),
		slog.String("kv_mount", c.KVMount),
		slog.String("prefix", c.Prefix),
		slog.String("transit_mount", c.TransitMount),
	}
	if c.User != "" {
		attrs = append(attrs, slog.String("user", c.User))
	}
	if c.Namespace != "" {
		attrs = append(attrs, slog.String("namespace", c.Namespace))
	}
	if c.AppRole != nil {
		attrs = append(attrs, slog.String("auth", "approle"))
	} else {
		attrs = append(attrs, slog.String("auth", "token"))
	}
	return slog.GroupValue(attrs...)
}

// String is the redacted form of LogValue, so a Config printed by mistake shows no secret.
func (c Config) String() string { return c.LogValue().String() }

// ConfigFromEnv returns the Config that Vault's own CLI would use with the environment getenv: VAULT_ADDR,
// VAULT_TOKEN, VAULT_CACERT, VAULT_CAPATH, VAULT_NAMESPACE, and $HOME/.vault-token as the token file.
func ConfigFromEnv(getenv func(string) string) Config {
	c := Config{
		Addr:      getenv("VAULT_ADDR"),
		Token:     getenv("VAULT_TOKEN"),
		CACert:    getenv("VAULT_CACERT"),
		CAPath:    getenv("VAULT_CAPATH"),
		Namespace: getenv("VAULT_NAMESPACE"),
	}
	if home := getenv("HOME"); home != "" {
		c.TokenFile = filepath.Join(home, ".vault-token")
	}
	return c
}

func (c *Config) setDefaults() {
	if c.KVMount == "" {
		c.KVMount = DefaultKVMount
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.TransitMount == "" {
		c.TransitMount = DefaultTransitMount
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.CacheMaxStale == 0 {
		c.CacheMaxStale = DefaultCacheMaxStale
	}
	if c.CacheSize <= 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.AppRole != nil && c.AppRole.Mount == "" {
		c.AppRole.Mount = DefaultAppRoleMount
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// GoString keeps %#v from printing the token.
func (c Config) GoString() string { return "vaultcfg.Config" + c.String() }

// LogValue implements slog.LogValuer without the secret id.
func (a AppRole) LogValue() slog.Value {
	return slog.GroupValue(slog.String("mount", a.Mount), slog.Bool("secret_id_file", a.SecretIDFile != ""))
}

// String is the redacted form of LogValue.
func (a AppRole) String() string { return a.LogValue().String() }

// GoString keeps %#v from printing the secret id.
func (a AppRole) GoString() string { return "vaultcfg.AppRole" + a.String() }
