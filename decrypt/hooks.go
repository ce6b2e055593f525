package decrypt

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/internal/rewriting"
)

// The methods below implement the proxy's hook interfaces (proxy.CandidateFilter, CacheProbe, HeaderGuard,
// AppendGuard, TextMatcher, HeaderMatcher, DerivedCache; meta.go: MetaSource, MetaPruner), which
// cmd/smimeproxy sets as fields of proxy.Options next to the Rewriter (checked in hooks_test.go). This package
// does not import proxy.

// CandidateCriteria implements proxy.CandidateFilter: only a message whose Content-Type names PKCS #7 or
// smime.p7m (RFC 8551 section 3.2; multipart/signed names it in its protocol parameter) can be encrypted or
// S/MIME signed (served with its signature status). Unsigned plain mail never matches and stays relayed as
// stored.
func (d *Decrypter) CandidateCriteria() *imap.SearchCriteria {
	return &imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{
		{Header: []imap.SearchCriteriaHeaderField{{Key: "Content-Type", Value: "pkcs7"}}},
		{Header: []imap.SearchCriteriaHeaderField{{Key: "Content-Type", Value: "smime"}}},
	}}}
}

// Cached implements proxy.CacheProbe: the served bytes of m are in the cache.
func (d *Decrypter) Cached(m MessageRef) bool {
	_, ok := d.cache.get(cacheKey(m))
	return ok
}

// NeedsStrip is the package function NeedsStrip.
func (d *Decrypter) NeedsStrip(header []byte) bool { return NeedsStrip(header) }

// StatusFields names the header fields this proxy writes (smime.OwnedFields), which the proxy searches the
// upstream server for to find plain messages carrying a forged one.
func (d *Decrypter) StatusFields() []string { return smime.OwnedFields() }

// OwnsField implements proxy.HeaderMatcher: SEARCH HEADER on an X-Smimeproxy-* field is answered from served
// copies (smime.IsStatusFieldName).
func (d *Decrypter) OwnsField(name string) bool { return smime.IsStatusFieldName(name) }

// MatchHeader is the package function MatchHeader.
func (d *Decrypter) MatchHeader(served []byte, name, needle string) bool {
	return MatchHeader(served, name, needle)
}

// MatchSearchHeader is the package function MatchSearchHeader.
func (d *Decrypter) MatchSearchHeader(served []byte, key, name, needle string) bool {
	return MatchSearchHeader(served, key, name, needle)
}

// SortKey implements proxy.HeaderMatcher with Dovecot's sort keys (SortKey).
func (d *Decrypter) SortKey(served []byte, key string) (string, bool) { return SortKey(served, key) }

// Derived implements proxy.DerivedCache: values derived from the served bytes of m (the proxy's parsed
// BODYSTRUCTURE and ENVELOPE) are kept with them in the cache, so a message is parsed once, not per FETCH.
func (d *Decrypter) Derived(m MessageRef, served []byte, name string, compute func() any) any {
	return d.cache.derived(cacheKey(m), served, name, compute)
}

// ServedPlaintext reports whether header (a message header) carries a status field saying "decrypted": the
// message is, or claims to be, plaintext this proxy served, whether or not its marker verifies (Origin). The
// proxy never lets such a message reach the upstream server unencrypted.
func (d *Decrypter) ServedPlaintext(header []byte) bool {
	for _, v := range mimepart.Values(header, StatusField) {
		status, _, _ := strings.Cut(v, ";")
		if strings.EqualFold(strings.TrimSpace(status), "decrypted") {
			return true
		}
	}
	return false
}

// EmbedsServedPlaintext reports whether msg holds, on any line of its header or body, a status field saying
// "decrypted": a served copy forwarded as a message/rfc822 attachment (RFC 2046 section 5.2.1) or pasted whole
// into another message. It does not see through a transfer encoding (an attachment sent as base64). The proxy
// refuses such an APPEND when it cannot encrypt it.
func (d *Decrypter) EmbedsServedPlaintext(msg []byte) bool {
	prefix := []byte(StatusField + ":")
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		if len(line) < len(prefix) || !bytes.EqualFold(line[:len(prefix)], prefix) {
			continue
		}
		v := bytes.TrimSpace(line[len(prefix):])
		if len(v) >= len("decrypted") && bytes.EqualFold(v[:len("decrypted")], []byte("decrypted")) {
			return true
		}
	}
	return false
}

// StripStatus returns msg without any X-Smimeproxy-* header field (smime.StripStatusHeaders), or, for an
// unchanged explanation wrapper of an undecryptable message, the original it wraps (smime.OriginalOf): for an
// APPEND of a message served undecryptable, in either form, that is the original message.
func (d *Decrypter) StripStatus(msg []byte) []byte { return smime.OriginalOf(msg) }

// MatchText is the package function MatchText.
func (d *Decrypter) MatchText(served []byte, needle string, headerToo bool) bool {
	return MatchText(served, needle, headerToo)
}

// MaxAppendBytes is the largest message the proxy reads whole to encrypt it on APPEND (refused above with
// NO [TOOBIG]): the size limit of messages to decrypt (Options.MaxMessageBytes), as larger ones would not be
// served decrypted either.
func (d *Decrypter) MaxAppendBytes() int64 { return d.maxMessageBytes() }

// ErrNoOwnCertificate is returned (wrapped) by EncryptAppend when the user has no RSA certificate to encrypt to.
// It wraps rewriting.ErrNoCertificate, which the proxy tests for.
var ErrNoOwnCertificate = fmt.Errorf("decrypt: %w", rewriting.ErrNoCertificate)

// EncryptAppend encrypts msg to all of user's own certificates in the key store (EncryptToSelf), for
// `serve --encrypt-appends`, on by default. The content is msg itself, byte for byte, with a MAC in the outer
// header that lets this proxy serve it back to user exactly as appended (verbatim.go); a message with RFC 9788
// header protection is encrypted as EncryptToSelf does. A message that is already encrypted is returned
// unchanged. It
// fails with ErrNoOwnCertificate when the user has no RSA key (logged as a warning when the user has other
// keys, which may have decrypted what is being appended), or with the store's error; the proxy then refuses
// an APPEND of decrypted plaintext rather than store it, and stores other messages as sent only in the first
// case.
func (d *Decrypter) EncryptAppend(ctx context.Context, user string, msg []byte) ([]byte, error) {
	if alreadyEncrypted(msg) {
		return msg, nil
	}
	msg = convertBinaryParts(msg) // as Dovecot stores a literal8 APPEND (binary.go)
	login := user
	user = d.storeUser(user)
	entries, err := d.store.List(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("decrypt: list keys of %q: %w", user, err)
	}
	var ids []cms.RecipientID
	for _, e := range entries {
		for _, k := range e.RecipientIDs {
			if id, ok := cms.ParseRecipientKey(k); ok {
				ids = append(ids, id)
			}
		}
	}
	var certs []*x509.Certificate
	if len(ids) > 0 {
		keys, err := d.store.Lookup(ctx, user, ids)
		if err != nil {
			return nil, fmt.Errorf("decrypt: keys of %q: %w", user, err)
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if k.Cert == nil || seen[string(k.Cert.Raw)] || k.Cert.PublicKeyAlgorithm != x509.RSA {
				continue
			}
			seen[string(k.Cert.Raw)] = true
			certs = append(certs, k.Cert)
		}
	}
	if len(certs) == 0 {
		if len(entries) > 0 {
			d.log.Warn("appends cannot be encrypted: the user has keys but no RSA certificate", "user", user)
		}
		return nil, fmt.Errorf("%w: user %q", ErrNoOwnCertificate, user)
	}
	return encryptToSelf(msg, certs, d.verbatimField(login))
}
