package decrypt

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// Verbatim appends: a message the proxy encrypts from a client's APPEND (EncryptAppend) is served back byte for
// byte as the client appended it, so that a draft reads back exactly as saved (BODY[], RFC822.SIZE,
// BODYSTRUCTURE, ENVELOPE all come from those bytes) and the client cannot tell the proxy from the server.
//
// The content of the EnvelopedData is then the appended message itself (header and body, minus X-Smimeproxy-*
// fields), and the stored outer header, which holds the same fields as any message EncryptToSelf makes, gets
//
//	X-Smimeproxy-Append: v=1; n=<nonce>; mac=<mac>
//
// where mac is HMAC-SHA256 (RFC 2104) under the APPEND marker key (Options.MarkerKey) over a domain string, the
// login user, a random nonce (so two identical drafts do not show as such upstream) and the SHA-256 of the
// content. A phone with the key decrypts an ordinary S/MIME message whose entity is the whole draft. When the
// proxy decrypts a stored message carrying exactly one such field whose mac verifies over the decrypted bytes
// for the session's user, it serves those bytes as they are, without a status field. Any other case (no field,
// a forged or altered mac, another user, a changed marker key) is served like any decrypted message: nobody
// without the key can make the proxy serve chosen decrypted bytes unmarked.

// VerbatimField is the outer header field of an encrypted APPEND (smime.AppendHeader, an X-Smimeproxy-* field,
// so it is never served and is removed from plain messages that carry it).
const VerbatimField = smime.AppendHeader

// verbatimDomain separates this MAC from the APPEND marker's (marker.go), which uses the same key.
const verbatimDomain = "smimeproxy-append-verbatim-v1"

const verbatimNonceLen = 16

// verbatimMAC is HMAC-SHA256(key, domain || 0 || user || 0 || nonce || SHA-256(content)), base64url. User
// names cannot hold NUL (RFC 9051 section 4.3) and the nonce has a fixed length, so the encoding is unambiguous.
func (d *Decrypter) verbatimMAC(user string, nonce, content []byte) []byte {
	sum := sha256.Sum256(content)
	h := hmac.New(sha256.New, d.markerKey)
	h.Write([]byte(verbatimDomain))
	h.Write([]byte{0})
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write(nonce)
	h.Write(sum[:])
	out := make([]byte, base64.RawURLEncoding.EncodedLen(sha256.Size))
	base64.RawURLEncoding.Encode(out, h.Sum(nil))
	return out
}

// verbatimField returns the function encryptToSelf calls with the content it encrypts for user's APPEND: the
// VerbatimField line, with its CRLF.
func (d *Decrypter) verbatimField(user string) func(content []byte) []byte {
	return func(content []byte) []byte {
		nonce := make([]byte, verbatimNonceLen)
		rand.Read(nonce) // never fails (crypto/rand, Go 1.24)
		return []byte(VerbatimField + ": v=1; n=" + base64.RawURLEncoding.EncodeToString(nonce) +
			"; mac=" + string(d.verbatimMAC(user, nonce, content)) + "\r\n")
	}
}

// verbatimParams returns the nonce and mac of msg's one VerbatimField, or false when it has none, several, or
// one that does not parse.
func verbatimParams(msg []byte) (nonce, mac []byte, ok bool) {
	values := mimepart.Values(msg, VerbatimField)
	if len(values) != 1 {
		return nil, nil, false
	}
	var v string
	for _, p := range strings.Split(values[0], ";") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "v":
			v = strings.TrimSpace(val)
		case "n":
			nonce, _ = base64.RawURLEncoding.DecodeString(strings.TrimSpace(val))
		case "mac":
			mac = []byte(strings.TrimSpace(val))
		}
	}
	return nonce, mac, v == "1" && len(nonce) == verbatimNonceLen && len(mac) == base64.RawURLEncoding.EncodedLen(sha256.Size)
}

// servedVerbatim returns the decrypted content of msg (m as stored upstream) when msg is an APPEND this proxy
// encrypted for m.User (see above) and its mac verifies: what the client appended, to be served as it is. It
// reports false for every other message, which is then processed as usual; a key store failure is recorded in
// kr as for any message.
func (d *Decrypter) servedVerbatim(ctx context.Context, m MessageRef, msg []byte, kr *keyring) ([]byte, bool) {
	nonce, mac, ok := verbatimParams(msg)
	if !ok || int64(len(msg)) > d.maxMessageBytes() {
		return nil, false
	}
	header, body := mimepart.Split(msg)
	ct := mimepart.Values(header, "Content-Type")
	cte := mimepart.Values(header, "Content-Transfer-Encoding")
	if len(ct) != 1 || len(cte) != 1 || !strings.EqualFold(cte[0], "base64") {
		return nil, false
	}
	if mt, _ := mimepart.MediaType(ct[0], ""); mt != "application/pkcs7-mime" {
		return nil, false
	}
	der, err := mimepart.Decode(cte[0], body)
	if err != nil {
		return nil, false
	}
	env, err := cms.Parse(der)
	if err != nil {
		return nil, false
	}
	keys, err := kr.KeysFor(ctx, env.Recipients())
	if err != nil {
		return nil, false
	}
	for _, k := range keys {
		if k.Cert == nil || k.Private == nil {
			continue
		}
		if env == nil {
			if env, err = cms.Parse(der); err != nil {
				return nil, false
			}
		}
		pt, info, err := env.Decrypt(k.Cert, k.Private)
		env = nil // a failed attempt may have spent it
		if err != nil {
			continue
		}
		if !hmac.Equal(mac, d.verbatimMAC(m.User, nonce, pt)) {
			return nil, false
		}
		d.metricsDecrypted()
		d.log.Debug("decrypted (verbatim append)", slog.String("user", m.User), slog.String("mailbox", m.Mailbox),
			slog.Uint64("uidvalidity", uint64(m.UIDValidity)), slog.Uint64("uid", uint64(m.UID)),
			slog.String("cipher", info.ContentCipher))
		return pt, true
	}
	return nil, false
}
