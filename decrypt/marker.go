package decrypt

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// StatusField is the header field carrying the decryption status and the APPEND marker.
const StatusField = smime.StatusHeader

// markerDomain separates this MAC from any other use of the key. v2 binds the served bytes (v1 bound only the
// message reference, so an edited copy still verified and the edits were lost on APPEND).
const markerDomain = "smimeproxy-append-marker-v2"

// macLen is the length of a marker mac: base64url without padding of an HMAC-SHA256.
var macLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// macPlaceholder stands in for the mac while the served copy is built; seal overwrites it in place.
var macPlaceholder = strings.Repeat("-", macLen)

// refOf encodes the message as base64url(UIDVALIDITY (4 bytes) || UID (4 bytes) || mailbox name).
func refOf(m MessageRef) string {
	b := make([]byte, 8, 8+len(m.Mailbox))
	binary.BigEndian.PutUint32(b[0:], m.UIDValidity)
	binary.BigEndian.PutUint32(b[4:], m.UID)
	b = append(b, m.Mailbox...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// mac is HMAC-SHA256(key, domain || 0 || user || 0 || ref || 0 || digest), base64url, where digest is the
// SHA-256 of the served copy without its status field (servedDigest). User names cannot hold NUL in IMAP
// (RFC 9051 section 4.3: astring excludes CTL) and ref is base64url, so the encoding is unambiguous.
func (d *Decrypter) mac(user, ref string, digest []byte) string {
	h := hmac.New(sha256.New, d.markerKey)
	h.Write([]byte(markerDomain))
	h.Write([]byte{0})
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(ref))
	h.Write([]byte{0})
	h.Write(digest)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// servedDigest is the SHA-256 of msg without its X-Smimeproxy-* header fields (smime.StripStatusHeaders):
// what the marker binds. The status field itself is the proxy's and never stored upstream, so moving it or
// editing its informational parameters is not an edit of the message.
func servedDigest(msg []byte) []byte {
	h := sha256.New()
	smime.WriteStripped(h, msg)
	return h.Sum(nil)
}

// markerParams are the status header parameters that will mark m as served to m.User, with a placeholder mac
// that seal replaces once the served bytes exist.
func (d *Decrypter) markerParams(m MessageRef) []string {
	return []string{"ref=" + refOf(m), "mac=" + macPlaceholder}
}

// seal fills in the mac of the marker that markerParams put at the end of served's first line (the status
// field smime.Process writes on top), in place: HMAC over m.User, the ref and servedDigest(served), the digest
// Origin computes (every status field left out, so the signature status of signature.go too). A served copy
// without that marker (a plain message) is returned unchanged; so is one whose status line does not end as
// expected, whose placeholder then never verifies.
func (d *Decrypter) seal(m MessageRef, served []byte) []byte {
	eol := bytes.Index(served, []byte("\r\n"))
	if eol < 0 || !bytes.HasSuffix(served[:eol], []byte("; mac="+macPlaceholder)) {
		return served
	}
	if !bytes.HasPrefix(served, []byte(StatusField+":")) {
		return served
	}
	copy(served[eol-macLen:eol], d.mac(m.User, refOf(m), servedDigest(served)))
	return served
}

// Origin recognises an unmodified copy of a message this process (or another with the same marker key)
// served to user: msg is the whole message as the client appends it. It returns the source message when msg
// holds exactly one X-Smimeproxy-Status field whose ref and mac parameters verify under the marker key for this
// user and for msg's bytes without its status field (HMAC-SHA256, RFC 2104, compared in constant time). A
// message served to another user, with an altered ref, marked under another key, or edited in any byte
// outside the status field (body, other header fields, line ends) yields false: the proxy then stores it as
// new content (encrypted) instead of turning the APPEND into an upstream COPY of ref's ciphertext, which
// would silently drop the client's edits.
func (d *Decrypter) Origin(user string, msg []byte) (MessageRef, bool) {
	values := mimepart.Values(msg, StatusField)
	if len(values) != 1 {
		return MessageRef{}, false
	}
	var ref, mac string
	for i, p := range strings.Split(values[0], ";") {
		if i == 0 {
			continue // the status itself
		}
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "ref":
			ref = strings.Trim(strings.TrimSpace(v), `"`)
		case "mac":
			mac = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	if ref == "" || len(mac) != macLen || !hmac.Equal([]byte(mac), []byte(d.mac(user, ref, servedDigest(msg)))) {
		return MessageRef{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(ref)
	if err != nil || len(b) < 8 {
		return MessageRef{}, false
	}
	return MessageRef{
		User:        user,
		Mailbox:     string(b[8:]),
		UIDValidity: binary.BigEndian.Uint32(b[0:]),
		UID:         binary.BigEndian.Uint32(b[4:]),
	}, true
}
