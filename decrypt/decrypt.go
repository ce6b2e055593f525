package decrypt

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/metastore"
)

// DefaultCacheBytes is the cache bound used when Options.CacheBytes is zero.
const DefaultCacheBytes = 256 << 20

// DefaultCacheMaxIdle is how long a served copy stays cached after its last use when Options.CacheMaxIdle is
// zero: decrypted mail does not stay in memory indefinitely after the client stopped reading it.
const DefaultCacheMaxIdle = time.Hour

// ReasonKeyUnavailable is the undecryptable reason served when the key store failed (e.g. Vault unreachable).
const ReasonKeyUnavailable = string(smime.ReasonKeyUnavailable)

// Metrics receives counters. Every method must be safe for concurrent use; a nil Metrics counts nothing.
type Metrics interface {
	Decrypted()
	Undecryptable(reason string)
	CacheHit()
	CacheMiss()
}

// Options configure New. The zero value of every field is usable except Store.
type Options struct {
	// Store supplies users' keys. Required.
	Store keystore.Store
	// CacheBytes bounds the memory held by served messages; 0 means DefaultCacheBytes, negative disables the
	// cache.
	CacheBytes int64
	// CacheMaxIdle is how long a served copy stays cached after it was last used; then it is dropped and its
	// memory released. 0 means DefaultCacheMaxIdle, negative means no time limit.
	CacheMaxIdle time.Duration
	// MarkerKey is the HMAC key of the APPEND marker. nil means a random key for this process.
	MarkerKey []byte
	// MaxMessageBytes is passed to smime.Options.MaxSize; 0 leaves smime's default.
	MaxMessageBytes int64
	// Logger receives one line per decryption outcome (never plaintext or keys); nil discards.
	Logger *slog.Logger
	// Metrics receives counters; nil counts nothing.
	Metrics Metrics
	// KeyUser maps the IMAP login name (MessageRef.User) to the key store's user name, e.g. to strip a
	// domain (`serve --key-user-template`); nil uses the login name. It is applied to the logged-in user only,
	// so a session never reaches another user's keys unless the operator's template maps two logins together.
	KeyUser func(login string) string
	// Contacts is the users' address book (signature.go): the certificates of a signed message's From address
	// are used to verify it, and signer certificates are harvested into it. nil: neither.
	Contacts keystore.AddressBook
	// Roots are the trust anchors for signatures; nil means the system roots. CAs are added to them
	// (`serve --ca-bundle`).
	Roots *x509.CertPool
	CAs   []*x509.Certificate
	// NoHarvest keeps signer certificates out of the address book (`serve --harvest-certs=false`).
	NoHarvest bool
	// ExplainUndecryptable serves a message that cannot be decrypted wrapped with a short text saying why
	// (smime.Options.Explain, `serve --undecryptable=explain`); false serves the original under the status
	// field. An APPEND of either gives back the original (StripStatus).
	ExplainUndecryptable bool
	// MetaStore keeps the metadata of served copies (meta.go) across restarts and beyond the memory cache
	// (`serve --metadata-store`); nil: none. Only cacheable outcomes are stored.
	MetaStore *metastore.Store
}

// Decrypter serves S/MIME-encrypted messages decrypted. It implements proxy.Rewriter and is safe for
// concurrent use.
type Decrypter struct {
	store     keystore.Store
	markerKey []byte
	maxSize   int64
	log       *slog.Logger
	metrics   Metrics
	keyUser   func(string) string
	cache     *cache
	sigs      *signatures
	explain   bool // Options.ExplainUndecryptable
	meta      *metastore.Store
	metaGen   [8]byte
}

// New returns a Decrypter. It fails when opts.Store is nil or a random marker key cannot be made.
func New(opts Options) (*Decrypter, error) {
	if opts.Store == nil {
		return nil, errors.New("decrypt: no key store")
	}
	key := opts.MarkerKey
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("decrypt: marker key: %w", err)
		}
	} else {
		key = append([]byte(nil), key...)
	}
	limit := opts.CacheBytes
	if limit == 0 {
		limit = DefaultCacheBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Decrypter{
		store:     opts.Store,
		markerKey: key,
		maxSize:   opts.MaxMessageBytes,
		log:       log,
		metrics:   opts.Metrics,
		keyUser:   opts.KeyUser,
		cache:     newCache(limit, cmp.Or(opts.CacheMaxIdle, DefaultCacheMaxIdle)),
		sigs:      newSignatures(&opts, log),
		explain:   opts.ExplainUndecryptable,
		meta:      opts.MetaStore,
		metaGen:   metaGeneration(key, opts.ExplainUndecryptable),
	}, nil
}

// Candidate reports from a message's BODYSTRUCTURE alone whether it may be S/MIME encrypted and so must be
// rewritten: a top-level application/pkcs7-mime (or x-pkcs7-mime, or octet-stream named smime.p7m; RFC 8551
// section 3.2.1), including opaque signed-data, which may wrap enveloped data (section 3.5.3), or a
// multipart/signed (RFC 1847 section 2.1) whose first part is such or whose protocol is S/MIME's (its
// signature status is served). It does no I/O.
func (d *Decrypter) Candidate(bs imap.BodyStructure) bool {
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		return isPKCS7Part(bs)
	case *imap.BodyStructureMultiPart:
		if !strings.EqualFold(bs.Subtype, "signed") || len(bs.Children) == 0 {
			return false
		}
		if isSMIMESigned(bs) { // plain signed: served with its signature status (signature.go)
			return true
		}
		first, ok := bs.Children[0].(*imap.BodyStructureSinglePart)
		return ok && isPKCS7Part(first)
	}
	return false
}

func isPKCS7Part(bs *imap.BodyStructureSinglePart) bool {
	mt := strings.ToLower(bs.Type + "/" + bs.Subtype)
	params := map[string]string{}
	for k, v := range bs.Params {
		params[strings.ToLower(k)] = v
	}
	if _, ok := params["name"]; !ok {
		if disp := bs.Disposition(); disp != nil {
			for k, v := range disp.Params {
				if strings.EqualFold(k, "filename") {
					params["name"] = v
				}
			}
		}
	}
	if smime.IsSMIMEType(mt, params) {
		return true
	}
	switch mt {
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		// Every smime-type, or none: the CMS content type decides (smime-type=signed-data may wrap
		// enveloped data, RFC 8551 section 3.5.3; certs-only is served unchanged).
		return true
	case "application/octet-stream":
		return strings.EqualFold(params["name"], "smime.p7m")
	}
	return false
}

// StatusFieldPrefix starts the name of every header field this proxy adds to served messages.
const StatusFieldPrefix = smime.StatusPrefix

// NeedsStrip reports whether header (a message header, or the result of BODY.PEEK[HEADER.FIELDS (...)]) holds
// a status field by the one definition (smime.HasStatusField): a field whose name starts with
// StatusFieldPrefix in any case, however hidden (folded, after any number of other fields, as an indented
// first line, or after a bare CR inside another field). Such a field in a message as stored upstream was not
// added by this proxy and must not reach the client, so the proxy treats the message as a candidate even
// when its BODYSTRUCTURE is plain, and strips it from an APPEND.
func NeedsStrip(header []byte) bool { return smime.HasStatusField(header) }

// ownedMin is the message size from which process hands the fetched bytes to smime.Process (Options.Owned):
// a large message is then decoded and decrypted inside the buffer it was fetched into, so that its plaintext
// costs one copy (the served message) instead of two. It does so only when the message's first bytes name a
// key of the user as a recipient (holdsKeyFor): a message that then does not decrypt must be fetched again
// (its buffer is spent), so messages for someone else, or not CMS at all, are decoded into a copy instead.
// Smaller messages are not worth either.
const ownedMin = 1 << 20

// uncachedMin is the size from which an undecryptable served copy is not cached: it is the ciphertext under
// a status field, as large as the message upstream and not worth keeping (issue 10: a 61 MB fake stayed in
// memory for good). It is served from a fresh fetch each time, like a message relayed unchanged.
const uncachedMin = 1 << 20

// Rewrite returns the bytes to serve for m: the decrypted message with an X-Smimeproxy-Status header, or the
// original with a status header saying why it could not be decrypted, or (not encrypted) the original minus
// forged status fields. Only m.User's keys are used. Results are cached; concurrent calls for the same message
// decrypt once. It fails only when raw fails (the upstream fetch), never because a message is undecryptable.
// raw's result is owned: it may be decrypted in place, retained (cached or served as is), or called again. The
// returned slice is shared with the cache and other callers: it must not be modified.
func (d *Decrypter) Rewrite(ctx context.Context, m MessageRef, raw func() ([]byte, error)) ([]byte, error) {
	key := cacheKey(m)
	if b, ok := d.cache.get(key); ok {
		d.cacheHit()
		return b, nil
	}
	d.cacheMiss()
	return d.cache.do(ctx, key, func(ctx context.Context) ([]byte, bool, error) {
		served, cacheable, err := d.process(ctx, m, raw)
		if err == nil && !cacheable && ctx.Err() != nil {
			// Every client waiting went away in the middle (a Transit call cut short): nobody is served this.
			err = ctx.Err()
		}
		if err == nil && cacheable {
			d.storeMeta(ctx, m, served)
		}
		return served, cacheable, err
	})
}

// process decrypts m; cacheable is false when the outcome depends on a transient failure.
func (d *Decrypter) process(ctx context.Context, m MessageRef, raw func() ([]byte, error)) (served []byte, cacheable bool, err error) {
	msg, err := raw()
	if err != nil {
		return nil, false, fmt.Errorf("decrypt: fetch %s uid %d: %w", m.Mailbox, m.UID, err)
	}
	kr := &keyring{store: d.store, user: d.storeUser(m.User)}
	if pt, ok := d.servedVerbatim(ctx, m, msg, kr); ok { // an APPEND this proxy encrypted, served as appended
		return pt, true, nil
	}
	sigs := d.startSignatures(ctx, kr.user, msg, d.maxMessageBytes()) // signature.go
	opts := &smime.Options{StatusParams: d.markerParams(m), MaxSize: d.maxSize, Explain: d.explain}
	var res smime.Result
	if int64(len(msg)) > d.maxMessageBytes() {
		res = processTooLarge(ctx, msg, kr, opts)
	} else {
		opts.Owned = len(msg) >= ownedMin && kr.holdsKeyFor(ctx, msg)
		res = smime.Process(ctx, msg, kr, opts)
	}
	if res.Spent {
		// Decoded in place although its recipients include a key of the user, and then not decrypted
		// (broken content, or the key failed): the original is needed again, as undecryptable messages are
		// served as they are upstream. The only case that fetches a message twice.
		if msg, err = raw(); err != nil {
			return nil, false, fmt.Errorf("decrypt: fetch %s uid %d again: %w", m.Mailbox, m.UID, err)
		}
		opts.Owned = false
		res = smime.Process(ctx, msg, kr, opts)
	}
	served = res.Served
	if served == nil {
		served = msg
	}
	attrs := []any{slog.String("user", m.User), slog.String("mailbox", m.Mailbox),
		slog.Uint64("uidvalidity", uint64(m.UIDValidity)), slog.Uint64("uid", uint64(m.UID))}
	switch res.Status {
	case smime.Decrypted:
		d.metricsDecrypted()
		d.log.Debug("decrypted", append(attrs, slog.String("cipher", res.Info.ContentCipher),
			slog.String("key", res.Fingerprint))...)
	case smime.Undecryptable:
		if cause, ok := errors.AsType[*smime.UndecryptableError](res.Err); ok && cause.Reason == smime.ReasonKeyUnavailable {
			d.log.Warn("key store unavailable", append(attrs, slog.Any("err", cause.Err))...)
		} else {
			d.log.Info("undecryptable", append(attrs, slog.String("reason", string(res.Reason)))...)
		}
		d.metricsUndecryptable(string(res.Reason))
	default:
		served = smime.StripStatusHeaders(served)
	}
	served, sigCacheable := sigs.finish(served, res.Status == smime.Decrypted)
	served = d.seal(m, served) // the APPEND marker binds the served bytes, signature field included (marker.go)
	// Not cached: outcomes of a failing key store (Vault unreachable, sealed or denying: reason key-unavailable,
	// whether Lookup failed or a Transit key's decryption did), retried on the next fetch; and undecryptable
	// copies of large messages (uncachedMin).
	cacheable = sigCacheable && (res.Status != smime.Undecryptable ||
		res.Reason != smime.ReasonKeyUnavailable && len(served) < uncachedMin)
	return served, cacheable, nil
}

// maxMessageBytes is the size limit of messages to decrypt (Options.MaxMessageBytes, smime's default).
func (d *Decrypter) maxMessageBytes() int64 {
	if d.maxSize > 0 {
		return d.maxSize
	}
	return smime.DefaultMaxSize
}

// storeUser is the key store's name for the IMAP login user.
func (d *Decrypter) storeUser(login string) string {
	if d.keyUser == nil {
		return login
	}
	return d.keyUser(login)
}

// CacheStats returns how many served messages the cache holds and the bytes it accounts for them.
func (d *Decrypter) CacheStats() (entries int, bytes int64) { return d.cache.stats() }

// keyring gives smime the keys of one user (the session's) from the store. It remembers its last lookup, so
// that the checks before smime.Process (holdsKeyFor, servedVerbatim) and Process itself ask the store once per
// message, also when it fails. It lives for one message.
type keyring struct {
	store    keystore.Store
	user     string
	lastIDs  string
	lastKeys []smime.Key
	lastErr  error
}

// KeysFor implements smime.Keyring. The store binds remote keys (Vault Transit) to ctx, the request's.
func (k *keyring) KeysFor(ctx context.Context, ids []cms.RecipientID) ([]smime.Key, error) {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(id.Key())
		b.WriteByte(0)
	}
	idKey := b.String()
	if idKey == k.lastIDs && (k.lastKeys != nil || k.lastErr != nil) {
		return k.lastKeys, k.lastErr
	}
	k.lastIDs = idKey
	keys, err := k.store.Lookup(ctx, k.user, ids)
	if err != nil {
		k.lastKeys, k.lastErr = nil, fmt.Errorf("decrypt: keys of %q: %w", k.user, err)
		return nil, k.lastErr
	}
	out := make([]smime.Key, 0, len(keys))
	for _, key := range keys {
		out = append(out, smime.Key{Cert: key.Cert, Private: key.Private})
	}
	k.lastKeys, k.lastErr = out, nil
	return out, nil
}

func (d *Decrypter) cacheHit() {
	if d.metrics != nil {
		d.metrics.CacheHit()
	}
}

func (d *Decrypter) cacheMiss() {
	if d.metrics != nil {
		d.metrics.CacheMiss()
	}
}

func (d *Decrypter) metricsDecrypted() {
	if d.metrics != nil {
		d.metrics.Decrypted()
	}
}

func (d *Decrypter) metricsUndecryptable(reason string) {
	if d.metrics != nil {
		d.metrics.Undecryptable(reason)
	}
}
