package decrypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// DefaultCacheBytes is the cache bound used when Options.CacheBytes is zero.
const DefaultCacheBytes = 256 << 20

// ReasonKeyUnavailable is the undecryptable reason served when the key store failed (e.g. Vault unreachable).
const ReasonKeyUnavailable = smime.ReasonKeyUnavailable

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
		cache:     newCache(limit),
	}, nil
}

// Candidate reports from a message's BODYSTRUCTURE alone whether it may be S/MIME encrypted and so must be
// rewritten: a top-level application/pkcs7-mime (or x-pkcs7-mime, or octet-stream named smime.p7m; RFC 8551
// section 3.2.1), including opaque signed-data, which may wrap enveloped data (section 3.5.3), or a
// multipart/signed (RFC 1847 section 2.1) whose first part is such. It does no I/O.
func (d *Decrypter) Candidate(bs imap.BodyStructure) bool {
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		return isPKCS7Part(bs)
	case *imap.BodyStructureMultiPart:
		if !strings.EqualFold(bs.Subtype, "signed") || len(bs.Children) == 0 {
			return false
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
// a field whose name starts with StatusFieldPrefix. Such a field in a message as stored upstream was not added
// by this proxy and must not reach the client, so the proxy treats the message as a candidate even when its
// BODYSTRUCTURE is plain. Matching is case-insensitive (RFC 5322 section 1.2.2).
func NeedsStrip(header []byte) bool {
	for len(header) > 0 {
		line := header
		if i := bytes.IndexByte(header, '\n'); i >= 0 {
			line, header = header[:i], header[i+1:]
		} else {
			header = nil
		}
		if len(line) >= len(StatusFieldPrefix) && bytes.EqualFold(line[:len(StatusFieldPrefix)], []byte(StatusFieldPrefix)) {
			return true
		}
	}
	return false
}

// ownedMin is the message size from which process hands the fetched bytes to smime.Process (Options.Owned):
// a large message is then decoded and decrypted inside the buffer it was fetched into, so that its plaintext
// costs one copy (the served message) instead of two. Smaller messages are not worth the refetch that an
// undecryptable one then costs.
const ownedMin = 1 << 20

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
	// A shared call made with a leader's context that was cancelled is retried with ours; bounded.
	for attempt := 0; ; attempt++ {
		b, err, shared := d.cache.do(key, func() ([]byte, bool, error) { return d.process(ctx, m, raw) })
		if err != nil && shared && attempt < 3 && ctx.Err() == nil &&
			(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			continue
		}
		return b, err
	}
}

// process decrypts m; cacheable is false when the outcome depends on a transient failure.
func (d *Decrypter) process(ctx context.Context, m MessageRef, raw func() ([]byte, error)) (served []byte, cacheable bool, err error) {
	msg, err := raw()
	if err != nil {
		return nil, false, fmt.Errorf("decrypt: fetch %s uid %d: %w", m.Mailbox, m.UID, err)
	}
	kr := &keyring{ctx: ctx, store: d.store, user: d.storeUser(m.User)}
	opts := &smime.Options{StatusParams: d.markerParams(m), MaxSize: d.maxSize, Owned: len(msg) >= ownedMin}
	res := smime.Process(msg, kr, opts)
	if res.Spent {
		// Decoded in place and then not decrypted: the original is needed again (undecryptable messages
		// are served as they are upstream). One more upstream fetch, for large undecryptable mail only.
		if msg, err = raw(); err != nil {
			return nil, false, fmt.Errorf("decrypt: fetch %s uid %d again: %w", m.Mailbox, m.UID, err)
		}
		opts.Owned = false
		res = smime.Process(msg, kr, opts)
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
		reason := res.Reason
		if kr.err != nil {
			reason = ReasonKeyUnavailable
			d.log.Warn("key store unavailable", append(attrs, slog.Any("error", kr.err))...)
		} else {
			d.log.Info("undecryptable", append(attrs, slog.String("reason", reason))...)
		}
		d.metricsUndecryptable(reason)
	default:
		served = smime.StripStatusHeaders(served)
	}
	return served, kr.err == nil, nil
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

// keyring gives smime the session user's keys only, remembering a store failure.
type keyring struct {
	ctx   context.Context
	store keystore.Store
	user  string
	err   error
}

func (k *keyring) KeysFor(ids []cms.RecipientID) ([]smime.Key, error) {
	keys, err := k.store.Lookup(k.ctx, k.user, ids)
	if err != nil {
		k.err = err
		return nil, fmt.Errorf("decrypt: %s: %w", ReasonKeyUnavailable, err)
	}
	out := make([]smime.Key, 0, len(keys))
	for _, key := range keys {
		out = append(out, smime.Key{Cert: key.Cert, Private: key.Private})
	}
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
