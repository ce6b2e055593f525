package decrypt

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// StatusField is the header field carrying the decryption status and the APPEND marker.
const StatusField = smime.StatusHeader

// markerDomain separates this MAC from any other use of the key.
const markerDomain = "smimeproxy-append-marker-v1"

// refOf encodes the message as base64url(UIDVALIDITY (4 bytes) || UID (4 bytes) || mailbox name).
func refOf(m MessageRef) string {
	b := make([]byte, 8, 8+len(m.Mailbox))
	binary.BigEndian.PutUint32(b[0:], m.UIDValidity)
	binary.BigEndian.PutUint32(b[4:], m.UID)
	b = append(b, m.Mailbox...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// mac is HMAC-SHA256(key, domain || 0 || user || 0 || ref), base64url. User names cannot hold NUL in IMAP
// (RFC 9051 section 4.3: astring excludes CTL), so the encoding is unambiguous.
func (d *Decrypter) mac(user, ref string) string {
	h := hmac.New(sha256.New, d.markerKey)
	h.Write([]byte(markerDomain))
	h.Write([]byte{0})
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(ref))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// markerParams are the status header parameters that mark m as served to m.User.
func (d *Decrypter) markerParams(m MessageRef) []string {
	ref := refOf(m)
	return []string{"ref=" + ref, "mac=" + d.mac(m.User, ref)}
}

// Origin recognises a message that this process served to user: header is the message's header (or the whole
// message); it returns the source message when header holds exactly one X-Smimeproxy-Status field whose ref
// and mac parameters verify under the marker key for this user (HMAC-SHA256, RFC 2104, compared in constant
// time). A message served to another user, with an altered ref, or marked under another key yields false. The
// proxy turns such an APPEND into an upstream COPY of ref's ciphertext.
func (d *Decrypter) Origin(user string, header []byte) (MessageRef, bool) {
	values := fieldValues(header, StatusField)
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
	if ref == "" || mac == "" || !hmac.Equal([]byte(mac), []byte(d.mac(user, ref))) {
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

// fieldValues returns the unfolded values (RFC 5322 section 2.2.3) of every field named name in the header
// part of msg (up to the first empty line).
func fieldValues(msg []byte, name string) []string {
	var out []string
	cur := -1 // index in out of the field being continued, or -1
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur >= 0 {
				out[cur] += string(line)
			}
			continue
		}
		cur = -1
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			out = append(out, strings.TrimSpace(string(v)))
			cur = len(out) - 1
		}
	}
	return out
}
