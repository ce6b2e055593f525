package decrypt

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/proxy"
)

var (
	_ proxy.AppendGuard     = (*Decrypter)(nil)
	_ proxy.TextMatcher     = (*Decrypter)(nil)
	_ proxy.DerivedCache    = (*Decrypter)(nil)
	_ proxy.CandidateFilter = (*Decrypter)(nil)
	_ proxy.CacheProbe      = (*Decrypter)(nil)
)

// The methods below implement the proxy's optional interfaces (proxy.HeaderGuard, proxy.AppendGuard,
// proxy.TextMatcher), which the proxy finds with type assertions on its Rewriter.

// CandidateCriteria implements proxy.CandidateFilter: only a message whose Content-Type names PKCS #7 or
// smime.p7m (RFC 8551 section 3.2; multipart/signed names it in its protocol parameter) can be encrypted.
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

// StatusFields names the header fields the proxy should fetch (BODY.PEEK[HEADER.FIELDS (...)], RFC 9051
// section 6.4.5) next to BODYSTRUCTURE to pass to NeedsStrip: the only field this proxy adds, so the only one
// a forger could use to mislead a user.
func (d *Decrypter) StatusFields() []string { return []string{StatusField} }

// Derived implements proxy.DerivedCache: values derived from the served bytes of m (the proxy's parsed
// BODYSTRUCTURE and ENVELOPE) are kept with them in the cache, so a message is parsed once, not per FETCH.
func (d *Decrypter) Derived(m MessageRef, served []byte, name string, compute func() any) any {
	return d.cache.derived(cacheKey(m), served, name, compute)
}

// ServedPlaintext reports whether header (a message header) carries a status field saying "decrypted": the
// message is, or claims to be, plaintext this proxy served, whether or not its marker verifies (Origin). The
// proxy never lets such a message reach the upstream server unencrypted.
func (d *Decrypter) ServedPlaintext(header []byte) bool {
	for _, v := range fieldValues(header, StatusField) {
		status, _, _ := strings.Cut(v, ";")
		if strings.EqualFold(strings.TrimSpace(status), "decrypted") {
			return true
		}
	}
	return false
}

// StripStatus returns msg without any X-Smimeproxy-* header field (smime.StripStatusHeaders): for an APPEND of
// a message served undecryptable, that is the original message.
func (d *Decrypter) StripStatus(msg []byte) []byte { return smime.StripStatusHeaders(msg) }

// MatchText is the package function MatchText.
func (d *Decrypter) MatchText(served []byte, needle string, headerToo bool) bool {
	return MatchText(served, needle, headerToo)
}

// ErrNoOwnCertificate is returned (wrapped) by EncryptAppend when the user has no RSA certificate to encrypt to.
var ErrNoOwnCertificate = errors.New("decrypt: no certificate of the user to encrypt to")

// EncryptAppend encrypts msg to all of user's own certificates in the key store (EncryptToSelf), for
// `serve --encrypt-appends`. A message that is already encrypted is returned unchanged. It fails with
// ErrNoOwnCertificate when the user has no RSA key, or with the store's error; the proxy then refuses the
// APPEND rather than store plaintext.
func (d *Decrypter) EncryptAppend(ctx context.Context, user string, msg []byte) ([]byte, error) {
	if alreadyEncrypted(msg) {
		return msg, nil
	}
	user = d.storeUser(user)
	entries, err := d.store.List(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("decrypt: list keys of %q: %w", user, err)
	}
	var ids []cms.RecipientID
	for _, e := range entries {
		for _, k := range e.RecipientIDs {
			if id, ok := parseRecipientKey(k); ok {
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
		return nil, fmt.Errorf("%w: user %q", ErrNoOwnCertificate, user)
	}
	return EncryptToSelf(msg, certs)
}

// parseRecipientKey inverts cms.RecipientID.Key: "ski:<hex>" or "iss:<issuer DER hex>:<serial hex>".
func parseRecipientKey(k string) (cms.RecipientID, bool) {
	switch {
	case strings.HasPrefix(k, "ski:"):
		b, err := hex.DecodeString(k[4:])
		return cms.RecipientID{SubjectKeyID: b}, err == nil && len(b) > 0
	case strings.HasPrefix(k, "iss:"):
		iss, serial, ok := strings.Cut(k[4:], ":")
		if !ok {
			return cms.RecipientID{}, false
		}
		b, err := hex.DecodeString(iss)
		n, ok2 := new(big.Int).SetString(serial, 16)
		return cms.RecipientID{IssuerRaw: b, SerialNumber: n}, err == nil && ok2
	}
	return cms.RecipientID{}, false
}
