package vaultcfg

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/singleflight"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// Store is a keystore.Store in Vault. Create it with Open, release it with Close. Safe for concurrent use.
type Store struct {
	c     *client
	cfg   Config
	log   *slog.Logger
	cache *cache
	now   func() time.Time

	loads singleflight.Group // by user: one Vault load at a time
}

var _ keystore.Store = (*Store)(nil)

// missRefresh is how often a lookup that the (fresh) cache cannot answer may ask Vault again, so mail for a
// key imported a moment ago is found soon without every unknown recipient costing a Vault round trip.
const missRefresh = 10 * time.Second

// Open connects to Vault with cfg and authenticates (see Config for the token sources). It fails with a clear
// error when Vault is unreachable or sealed or the token is rejected.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.AppRole != nil {
		ar := *cfg.AppRole
		cfg.AppRole = &ar
	}
	cfg.setDefaults()
	cfg.KVMount = strings.Trim(cfg.KVMount, "/")
	cfg.TransitMount = strings.Trim(cfg.TransitMount, "/")
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.User != "" {
		if err := ValidateUser(cfg.User); err != nil {
			return nil, fmt.Errorf("vaultcfg: vault-user: %w", err)
		}
	}
	c, err := newClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{c: c, cfg: cfg, log: cfg.Logger, cache: newCache(cfg.CacheTTL, cfg.CacheMaxStale, cfg.CacheSize), now: time.Now}
	if err := s.checkKVMount(ctx); err != nil {
		c.close()
		return nil, err
	}
	return s, nil
}

// checkKVMount fails when the KV mount is visible to the token and is not KV version 2 (a KV version 1 mount
// would otherwise look empty). Vault hides mounts the token has no access to, and missing ones, behind a 403;
// those are reported by the first real call instead.
func (s *Store) checkKVMount(ctx context.Context) error {
	p := "sys/internal/ui/mounts/" + s.cfg.KVMount
	sec, err := s.c.read(ctx, p)
	if errors.Is(err, ErrPermissionDenied) || (err == nil && sec == nil) {
		return nil
	}
	if err != nil {
		return err
	}
	typ, _ := sec.Data["type"].(string)
	opts, _ := sec.Data["options"].(map[string]any)
	version, _ := opts["version"].(string)
	if typ != "kv" || version != "2" {
		if typ == "kv" {
			typ = "kv version " + version
		}
		return &vaultError{class: ErrMountNotFound, msg: fmt.Sprintf("vaultcfg: mount %q in vault at %s is %s; smimeproxy needs kv version 2", s.cfg.KVMount, s.c.addr, typ)}
	}
	return nil
}

// Ping asks Vault whether it is reachable, unsealed and accepts the token, and whether the KV mount is usable
// (the check Open makes). It is the readiness check of `serve`'s /healthz; its errors carry no secrets.
func (s *Store) Ping(ctx context.Context) error { return s.checkKVMount(ctx) }

// Close stops token renewal. The Store must not be used afterwards.
func (s *Store) Close() { s.c.close() }

// Secret field names in KV.
const (
	fieldChain        = "certificate_chain"
	fieldPrivateKey   = "private_key"
	fieldFingerprint  = "fingerprint"
	fieldSubject      = "subject"
	fieldEmails       = "emails"
	fieldNotBefore    = "not_before"
	fieldNotAfter     = "not_after"
	fieldRecipientIDs = "recipient_ids"
	fieldStorage      = "storage"
	fieldTransitMount = "transit_mount"
	fieldTransitKey   = "transit_key"
)

// ValidateUser checks that user can name a Vault path segment of its own: 1 to 256 characters of letters,
// digits and "@._+-", not starting with "." (so no "." or "..", and no clash with the proxy's state folders
// ".tls" and ".proxy"), "-" or "+" (a path segment "+" is a wildcard in Vault policies, so a policy for user
// "+" would grant every user's keys). Anything else (notably "/") could reach another user's keys.
func ValidateUser(user string) error {
	if user == "" {
		return errors.New("vaultcfg: empty user name")
	}
	if len(user) > 256 || !utf8.ValidString(user) {
		return fmt.Errorf("vaultcfg: invalid user name (too long or not UTF-8)")
	}
	if user[0] == '.' || user[0] == '-' || user[0] == '+' {
		return fmt.Errorf("vaultcfg: invalid user name %q: must not start with %q", user, user[:1])
	}
	for _, r := range user {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@._+-", r)) {
			return fmt.Errorf("vaultcfg: invalid user name %q: only letters, digits and @._+- are allowed", user)
		}
	}
	return nil
}

// validateID checks a key id (keystore.IDOf: lowercase hex).
func validateID(id string) error {
	if id == "" || len(id) > 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("vaultcfg: invalid key id %q: want lowercase hex as printed by 'keys list'", id)
	}
	return nil
}

// userDir is the KV path (below the mount) of user's keys; keyPath the one of one key.
func (s *Store) userDir(user string) string     { return s.cfg.Prefix + "/" + user }
func (s *Store) keyPath(user, id string) string { return s.userDir(user) + "/" + id }

// apiPath names a KV v2 API path for error messages: <mount>/<data|metadata>/<path>.
func (s *Store) apiPath(kind, p string) string { return s.cfg.KVMount + "/" + kind + "/" + p }

// Lookup implements keystore.Store. Keys come from the cache while fresh; a miss refreshes from Vault at most
// every missRefresh. When Vault is unreachable or sealed, keys cached up to CacheMaxStale ago still answer.
// Transit keys are returned bound to ctx (TransitKey.WithContext).
func (s *Store) Lookup(ctx context.Context, user string, ids []cms.RecipientID) ([]keystore.Key, error) {
	if err := ValidateUser(user); err != nil {
		return nil, err
	}
	if s.cfg.User != "" && user != s.cfg.User {
		// A one-user store's token reaches no one else's keys; say so instead of asking Vault.
		return nil, &vaultError{class: ErrPermissionDenied, msg: fmt.Sprintf("vaultcfg: keys of %q: this store serves only %q (vault-user)", user, s.cfg.User)}
	}
	now := s.now()
	cachedKeys, fresh, age, ok := s.cache.get(user, now)
	if ok && fresh {
		if m := matchKeys(ctx, cachedKeys, ids); len(m) > 0 || age < missRefresh {
			return m, nil
		}
	}
	keys, err := s.loadShared(ctx, user)
	if err != nil {
		if ok && (errors.Is(err, ErrUnreachable) || errors.Is(err, ErrSealed)) {
			if m := matchKeys(ctx, cachedKeys, ids); len(m) > 0 {
				s.log.Warn("vault unavailable, using cached keys", "user", user, "age", age.Round(time.Second), "err", err)
				return m, nil
			}
		}
		return nil, err
	}
	return matchKeys(ctx, keys, ids), nil
}

// loadShared loads user's keys into the cache, sharing one Vault round trip among concurrent callers (a mail
// client opening a folder fetches many messages at once; golang.org/x/sync/singleflight). The load runs under
// context.WithoutCancel(ctx), each request bounded by Config.Timeout, so a caller that goes away returns at
// once while the others still get the keys and the cache is filled.
func (s *Store) loadShared(ctx context.Context, user string) ([]keystore.Key, error) {
	ch := s.loads.DoChan(user, func() (any, error) {
		now := s.now()
		keys, err := s.load(context.WithoutCancel(ctx), user)
		if err == nil {
			s.cache.put(user, keys, now)
		}
		return keys, err
	})
	select {
	case r := <-ch:
		keys, _ := r.Val.([]keystore.Key)
		return keys, r.Err
	case <-ctx.Done():
		return nil, s.c.classify(ctx.Err(), "list", s.apiPath("metadata", s.userDir(user)))
	}
}

// matchKeys returns the keys that match any of ids, Transit keys bound to ctx.
func matchKeys(ctx context.Context, keys []keystore.Key, ids []cms.RecipientID) []keystore.Key {
	var out []keystore.Key
	for _, k := range keys {
		for _, id := range ids {
			if id.Matches(k.Cert) {
				if tk, ok := k.Private.(*TransitKey); ok {
					k.Private = tk.WithContext(ctx)
				}
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// List implements keystore.Store; it always asks Vault.
func (s *Store) List(ctx context.Context, user string) ([]keystore.Entry, error) {
	if err := ValidateUser(user); err != nil {
		return nil, err
	}
	ids, err := s.listIDs(ctx, user)
	if err != nil {
		return nil, err
	}
	var out []keystore.Entry
	for _, id := range ids {
		rec, err := s.read(ctx, user, id)
		if errors.Is(err, keystore.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rec.entry)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// load reads and parses all of user's keys. A secret that does not parse is logged and skipped, so one bad
// entry does not hide the others (nor turns the user's mail "key-unavailable" as if Vault were down); only a
// failing Vault call fails the load.
func (s *Store) load(ctx context.Context, user string) ([]keystore.Key, error) {
	ids, err := s.listIDs(ctx, user)
	if err != nil {
		return nil, err
	}
	var keys []keystore.Key
	for _, id := range ids {
		rec, err := s.read(ctx, user, id)
		if errors.Is(err, keystore.ErrNotFound) {
			continue
		}
		var ve *vaultError
		if err != nil && !errors.As(err, &ve) {
			s.log.Warn("skipping unusable key in vault", "path", s.apiPath("data", s.keyPath(user, id)), "err", err)
			continue
		}
		if err != nil {
			return nil, err
		}
		k, err := s.keyOf(rec)
		if err != nil {
			s.log.Warn("skipping unusable key in vault", "path", s.apiPath("data", s.keyPath(user, id)), "err", err)
			continue
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// listIDs lists user's key ids (KV v2 LIST on the metadata path); none is not an error.
func (s *Store) listIDs(ctx context.Context, user string) ([]string, error) {
	p := s.apiPath("metadata", s.userDir(user))
	sec, err := s.c.list(ctx, p)
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Data == nil {
		return nil, nil
	}
	raw, _ := sec.Data["keys"].([]any)
	var ids []string
	for _, v := range raw {
		id, _ := v.(string)
		if validateID(id) == nil { // skips sub-folders ("x/") and foreign entries
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// record is one key's secret as read from KV.
type record struct {
	entry        keystore.Entry
	chain        []*x509.Certificate
	keyPEM       string
	transitMount string
	transitKey   string
}

// read reads one key's secret; keystore.ErrNotFound when there is none (or its latest version is deleted).
func (s *Store) read(ctx context.Context, user, id string) (*record, error) {
	p := s.apiPath("data", s.keyPath(user, id))
	sec, err := s.c.read(ctx, p)
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("%w: %s", keystore.ErrNotFound, p)
	}
	data, _ := sec.Data["data"].(map[string]any)
	if data == nil {
		return nil, fmt.Errorf("%w: %s", keystore.ErrNotFound, p)
	}
	str := func(k string) string { v, _ := data[k].(string); return v }
	chain, err := parseChain(str(fieldChain))
	if err != nil {
		return nil, fmt.Errorf("vaultcfg: %s: %w", p, err)
	}
	rec := &record{chain: chain, keyPEM: str(fieldPrivateKey), transitMount: str(fieldTransitMount), transitKey: str(fieldTransitKey)}
	rec.entry = entryOf(chain[0], str(fieldStorage))
	if rec.entry.ID != id {
		return nil, fmt.Errorf("vaultcfg: %s: certificate does not match the key id", p)
	}
	return rec, nil
}

// keyOf makes a usable key of rec: the parsed PKCS#8 key for KV, a Transit decrypter for Transit.
func (s *Store) keyOf(rec *record) (keystore.Key, error) {
	k := keystore.Key{Entry: rec.entry, Cert: rec.chain[0], Chain: rec.chain}
	switch rec.entry.Storage {
	case keystore.StorageKV:
		blk, _ := pem.Decode([]byte(rec.keyPEM))
		if blk == nil || blk.Type != "PRIVATE KEY" {
			return keystore.Key{}, errors.New("no PKCS#8 private key")
		}
		priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		clear(blk.Bytes)
		if err != nil {
			return keystore.Key{}, errors.New("private key does not parse as PKCS#8")
		}
		if err := checkKeyPair(k.Cert, priv); err != nil {
			return keystore.Key{}, err
		}
		k.Private = priv
	case keystore.StorageTransit:
		pub, ok := k.Cert.PublicKey.(*rsa.PublicKey)
		if !ok || rec.transitKey == "" {
			return keystore.Key{}, errors.New("transit entry without an RSA certificate or key name")
		}
		mount := rec.transitMount
		if mount == "" {
			mount = s.cfg.TransitMount
		}
		k.Private = &TransitKey{c: s.c, mount: mount, name: rec.transitKey, pub: pub, timeout: s.cfg.Timeout}
	default:
		return keystore.Key{}, fmt.Errorf("unknown storage %q", rec.entry.Storage)
	}
	return k, nil
}

// Put implements keystore.Store: it checks that key belongs to chain[0], then writes the KV secret (and with
// opts.Transit imports the RSA key into Transit first). Putting the same certificate with the same storage
// again changes nothing in Vault. Switching a key from KV to Transit destroys the KV versions that held the
// private key.
func (s *Store) Put(ctx context.Context, user string, chain []*x509.Certificate, key crypto.PrivateKey, opts keystore.PutOptions) (keystore.Entry, error) {
	if err := ValidateUser(user); err != nil {
		return keystore.Entry{}, err
	}
	if len(chain) == 0 || chain[0] == nil {
		return keystore.Entry{}, errors.New("vaultcfg: no certificate")
	}
	if key == nil {
		return keystore.Entry{}, errors.New("vaultcfg: no private key")
	}
	cert := chain[0]
	if err := checkKeyPair(cert, key); err != nil {
		return keystore.Entry{}, err
	}
	storage := keystore.StorageKV
	if opts.Transit {
		storage = keystore.StorageTransit
		if err := transitCapable(key); err != nil {
			return keystore.Entry{}, err
		}
	}
	e := entryOf(cert, storage)
	defer s.cache.forget(user)

	old, err := s.read(ctx, user, e.ID)
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return keystore.Entry{}, err
	}
	if old != nil && old.entry.Storage == storage && old.entry.Fingerprint == e.Fingerprint {
		if storage == keystore.StorageKV && old.keyPEM != "" {
			return e, nil // idempotent: the same key is already there
		}
		if storage == keystore.StorageTransit {
			if err := s.ensureTransitKey(ctx, old.transitKey, key.(*rsa.PrivateKey)); err != nil {
				return keystore.Entry{}, err
			}
			return e, nil
		}
	}

	data := map[string]any{
		fieldChain:        encodeChain(chain),
		fieldFingerprint:  e.Fingerprint,
		fieldSubject:      e.Subject,
		fieldEmails:       e.Emails,
		fieldNotBefore:    e.NotBefore.UTC().Format(time.RFC3339),
		fieldNotAfter:     e.NotAfter.UTC().Format(time.RFC3339),
		fieldRecipientIDs: e.RecipientIDs,
		fieldStorage:      storage,
	}
	if storage == keystore.StorageTransit {
		name := transitKeyName(s.cfg.Prefix, user, e.ID)
		if err := s.ensureTransitKey(ctx, name, key.(*rsa.PrivateKey)); err != nil {
			return keystore.Entry{}, err
		}
		data[fieldTransitMount] = s.cfg.TransitMount
		data[fieldTransitKey] = name
		if old != nil && old.keyPEM != "" {
			// The private key was in KV: destroy every version rather than leave it in the history.
			if err := s.deleteSecret(ctx, user, e.ID); err != nil {
				return keystore.Entry{}, err
			}
		}
	} else {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return keystore.Entry{}, fmt.Errorf("vaultcfg: private key of type %T cannot be stored as PKCS#8", key)
		}
		data[fieldPrivateKey] = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		clear(der)
	}
	p := s.apiPath("data", s.keyPath(user, e.ID))
	if _, err := s.c.write(ctx, "write", p, map[string]any{"data": data}); err != nil {
		return keystore.Entry{}, err
	}
	if old != nil && old.entry.Storage == keystore.StorageTransit && storage == keystore.StorageKV {
		if err := s.deleteTransitKey(ctx, old.transitMount, old.transitKey); err != nil {
			s.log.Warn("could not delete the transit key after moving it to kv", "key", old.transitKey, "err", err)
		}
	}
	s.log.Info("stored key", "user", user, "id", e.ID, "storage", storage)
	return e, nil
}

// Remove implements keystore.Store: it destroys all versions of the KV secret and, for Transit, deletes the
// Transit key.
func (s *Store) Remove(ctx context.Context, user, id string) error {
	if err := ValidateUser(user); err != nil {
		return err
	}
	if err := validateID(id); err != nil {
		return err
	}
	defer s.cache.forget(user)
	rec, err := s.read(ctx, user, id)
	if err != nil {
		return err
	}
	if rec.entry.Storage == keystore.StorageTransit {
		if err := s.deleteTransitKey(ctx, rec.transitMount, rec.transitKey); err != nil {
			return err
		}
	}
	if err := s.deleteSecret(ctx, user, id); err != nil {
		return err
	}
	s.log.Info("removed key", "user", user, "id", id)
	return nil
}

// deleteSecret deletes the metadata and all versions of one key's secret.
func (s *Store) deleteSecret(ctx context.Context, user, id string) error {
	p := s.apiPath("metadata", s.keyPath(user, id))
	return s.c.del(ctx, p)
}

// checkKeyPair fails unless key is the private key of cert's public key.
func checkKeyPair(cert *x509.Certificate, key crypto.PrivateKey) error {
	signer, ok := key.(interface{ Public() crypto.PublicKey })
	if !ok {
		return fmt.Errorf("vaultcfg: unsupported private key type %T", key)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		// X25519/X448 certificates carry an *ecdh.PublicKey; an *ecdh.PrivateKey's Public matches that.
		return errors.New("vaultcfg: the private key does not belong to the certificate")
	}
	return nil
}

// transitCapable fails unless key can live in Transit: RSA 2048, 3072 or 4096 bits.
func transitCapable(key crypto.PrivateKey) error {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if !slices.Contains([]int{2048, 3072, 4096}, k.N.BitLen()) {
			return fmt.Errorf("vaultcfg: transit supports RSA keys of 2048, 3072 or 4096 bits, not %d", k.N.BitLen())
		}
		return nil
	case *ecdsa.PrivateKey, *ecdh.PrivateKey, ed25519.PrivateKey:
		return errors.New("vaultcfg: only RSA keys can be stored in transit: transit has no ECDH, so EC keys must stay in KV")
	default:
		return fmt.Errorf("vaultcfg: only RSA keys can be stored in transit, not %T", key)
	}
}

func encodeChain(chain []*x509.Certificate) string {
	var b strings.Builder
	for _, c := range chain {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return b.String()
}

func parseChain(s string) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := []byte(s)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, errors.New("certificate chain does not parse")
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no certificate in the secret")
	}
	return chain, nil
}

// oidEmailAddress is the legacy emailAddress attribute of a subject name (PKCS #9; RFC 5280 section 4.1.2.6
// says it may appear there, and NSS-made certificates carry the address only there).
var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// entryOf is keystore.EntryOf with the legacy subject emailAddress added when the certificate has no
// rfc822Name subject alternative name.
func entryOf(cert *x509.Certificate, storage string) keystore.Entry {
	e := keystore.EntryOf(cert, storage)
	if len(e.Emails) == 0 {
		for _, atv := range cert.Subject.Names {
			if s, ok := atv.Value.(string); ok && atv.Type.Equal(oidEmailAddress) {
				e.Emails = append(e.Emails, s)
			}
		}
		if len(e.Emails) > 0 {
			// pkix.Name.String renders the unknown attribute as hex (1.2.840.113549.1.9.1=#0c0f...); the
			// address is in Emails now, so show the subject without it.
			n := cert.Subject
			n.Names = nil
			e.Subject = n.String()
		}
	}
	return e
}
