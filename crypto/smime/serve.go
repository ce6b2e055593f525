package smime

import (
	"bytes"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

// protectedFields are the header fields a protected copy inside the encryption replaces (RFC 9788 section
// 2.2's user-facing fields plus the threading fields), and MIME-Version, which must not appear twice.
var protectedFields = []string{
	"Subject", "From", "To", "Cc", "Date", "Message-ID", "Reply-To", "In-Reply-To", "References",
}

// serve builds the served message: status, then the outer header fields of msg minus its Content-* fields,
// minus X-Smimeproxy-* fields and minus the fields the protected header replaces, then copies of protected
// fields that sit below a signature layer, then the decrypted entity with its own X-Smimeproxy-* fields
// removed. Everything is canonicalised to CRLF line ends (RFC 8551 section 3.1.1) and written with one
// allocation.
func serve(msg []byte, pt []byte, status []byte) []byte {
	emitted := pt
	ent := parseEntity(pt)
	// The older header protection (RFC 8551 section 3.1 "MAY wrap a full MIME message in a message/RFC822
	// wrapper"; RFC 9788 Appendix: forwarded=no marks such a wrapper): serve the wrapped message itself.
	if mt, params := ent.contentType(); mt == "message/rfc822" && strings.EqualFold(params["forwarded"], "no") {
		emitted = ent.body
		ent = parseEntity(emitted)
	}
	// A plaintext that does not start with a header field (some agents encrypt bare text) is all body: it
	// gets an empty line in front instead of being taken for malformed header fields.
	sep := ""
	if len(ent.fields) > 0 && !validField(ent.fields[0]) {
		ent = entity{body: emitted}
		sep = "\r\n"
	}
	replaced := map[string]bool{}
	for _, f := range ent.fields {
		if f.is("MIME-Version") || isProtected(f) {
			replaced[strings.ToLower(string(f.name))] = true
		}
	}
	// RFC 9788 section 4.1: the protected header fields are on the Cryptographic Payload, which for a signed
	// then encrypted message is the first part of the inner multipart/signed; its Content-Type carries hp.
	var copies []field
	copyProtected := func(payload entity) {
		if _, pp := payload.contentType(); pp["hp"] != "" || pp["protected-headers"] != "" {
			for _, f := range payload.fields {
				name := strings.ToLower(string(f.name))
				if isProtected(f) && !replaced[name] {
					copies = append(copies, f)
				}
			}
			for _, f := range copies {
				replaced[strings.ToLower(string(f.name))] = true
			}
		}
	}
	if mt, params := ent.contentType(); mt == "multipart/signed" {
		if parts := multipartParts(ent.body, params["boundary"], 2); len(parts) == 2 {
			copyProtected(parseEntity(parts[0]))
		}
	} else if ok, _ := smimeLabel(&ent); ok {
		// Opaque signed-data (RFC 8551 section 3.5.2) inside the encryption: the payload is its eContent.
		// The entity itself is served byte for byte (the client verifies it); only the fields are copied.
		if buf, err := decodeBody(&ent); err == nil && looksSigned(buf) {
			if content, err := cms.SignedContent(buf); err == nil {
				copyProtected(parseEntity(content))
			}
		}
	}

	keepOuter := func(f field) bool {
		return !f.hasPrefix("Content-") && !f.isStatus() &&
			!replaced[strings.ToLower(string(f.name))]
	}
	hdrLen := 0
	for _, f := range ent.fields {
		hdrLen += len(f.raw)
	}

	// Measure, then write.
	n := len(status) + len(sep)
	eachField(msg, func(f field) {
		if keepOuter(f) {
			n += fieldLen(f.raw)
		}
	})
	for _, f := range copies {
		n += fieldLen(f.raw)
	}
	for _, f := range ent.fields {
		if !f.isStatus() {
			n += canonLen(f.raw)
		}
	}
	rest := emitted[hdrLen:]
	restBare := bareLF(rest) // the body may be large: count once
	n += len(rest) + restBare

	out := make([]byte, 0, n)
	out = append(out, status...)
	eachField(msg, func(f field) {
		if keepOuter(f) {
			out = appendField(out, f.raw)
		}
	})
	for _, f := range copies {
		out = appendField(out, f.raw)
	}
	out = append(out, sep...)
	for _, f := range ent.fields {
		if !f.isStatus() {
			out = appendCanon(out, f.raw)
		}
	}
	if restBare == 0 {
		return append(out, rest...)
	}
	return appendCanon(out, rest)
}

// validField reports whether f starts with a field name and a colon (RFC 5322 section 2.2: printable
// US-ASCII except colon).
func validField(f field) bool {
	c := bytes.IndexByte(f.raw, ':')
	if c <= 0 {
		return false
	}
	for _, b := range bytes.TrimRight(f.raw[:c], " \t") {
		if b < 33 || b > 126 {
			return false
		}
	}
	return true
}

func isProtected(f field) bool {
	for _, name := range protectedFields {
		if f.is(name) {
			return true
		}
	}
	return false
}

// bareLF counts line feeds not preceded by a carriage return.
func bareLF(b []byte) int {
	n := 0
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return n
		}
		if i == 0 || b[i-1] != '\r' {
			n++
		}
		b = b[i+1:]
	}
}

// canonLen is the length of b with every bare LF turned into CRLF.
func canonLen(b []byte) int { return len(b) + bareLF(b) }

// appendCanon appends b to dst with every bare LF turned into CRLF; bare CRs are left alone.
func appendCanon(dst, b []byte) []byte {
	if bareLF(b) == 0 {
		return append(dst, b...)
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return append(dst, b...)
		}
		if i > 0 && b[i-1] == '\r' {
			dst = append(dst, b[:i+1]...)
		} else {
			dst = append(dst, b[:i]...)
			dst = append(dst, '\r', '\n')
		}
		b = b[i+1:]
	}
	return dst
}

// fieldLen and appendField handle a header field that continues with more header: it must end in CRLF even
// when it was the unterminated last line of its entity.
func fieldLen(raw []byte) int {
	n := canonLen(raw)
	if !bytes.HasSuffix(raw, []byte{'\n'}) {
		n += 2
	}
	return n
}

func appendField(dst, raw []byte) []byte {
	dst = appendCanon(dst, raw)
	if !bytes.HasSuffix(raw, []byte{'\n'}) {
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// StripStatusHeaders removes every X-Smimeproxy-* field from the top-level header of msg, so an upstream
// message cannot pretend to have been decrypted. It returns msg itself when there is none, otherwise a copy.
func StripStatusHeaders(msg []byte) []byte {
	strip := 0
	eachField(msg, func(f field) {
		if f.isStatus() {
			strip += len(f.raw)
		}
	})
	if strip == 0 {
		return msg
	}
	out := make([]byte, 0, len(msg)-strip)
	p := 0 // fields are contiguous from the start: p ends up at the empty line
	eachField(msg, func(f field) {
		if !f.isStatus() {
			out = append(out, f.raw...)
		}
		p += len(f.raw)
	})
	return append(out, msg[p:]...)
}
