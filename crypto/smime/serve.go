package smime

import (
	"bytes"
	"io"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

// protectedFields are the header fields a protected copy inside the encryption replaces (RFC 9788 section
// 2.2's user-facing fields plus the threading fields).
var protectedFields = []string{
	"Subject", "From", "To", "Cc", "Date", "Message-ID", "Reply-To", "In-Reply-To", "References",
}

// serve builds the served message from the message msg as received, the decrypted entity pt and the status
// field (with its CRLF). Its header is, in this order:
//
//  1. status, the only status field of the result;
//  2. the outer header fields of msg, except its Content-* fields (the replaced layer's), its status fields
//     (IsStatusField), fields the protected header replaces, and every line that is not a well-formed field
//     (validOuterField: no colon, a bad name, a first line starting with white space, a bare CR, a line of
//     white space only). Such lines are removed because the decrypted content follows directly: a reader that
//     takes one of them for the end of the header, or merges it with what follows, would mix attacker text
//     with the secret (EFAIL direct exfiltration);
//  3. copies of the protected fields of a signed payload (below);
//  4. the header fields of the decrypted entity minus its status fields. Unless the entity carries protected
//     header fields, only its MIME fields (Content-*, MIME-Version) are kept: any other field there (From,
//     Subject, Sender, ...) is neither protected nor meaningful on a MIME entity (RFC 8551 section 3.3), and
//     in a CBC ciphertext an attacker can change it.
//
// Protected header fields (RFC 9788) are used only where the RFC puts them: when the Cryptographic Payload's
// Content-Type has the hp parameter (or the older protected-headers parameter), or when the decrypted entity is
// the older wrapper, message/rfc822 with forwarded=no (RFC 8551 section 3.1; RFC 9788 Appendix), whose content
// is served in its place. The payload is the decrypted entity itself, or, when that is signed, the signed
// content: the first part of a multipart/signed or the eContent of an opaque signed-data, which stay byte for
// byte inside the entity and whose protected fields are copied up (item 3). Then, for each protected field
// name (protectedFields) present there, the outer fields of that name are left out. Without hp, inner fields
// never replace outer ones, and inner duplicates of them are not served at the top level.
//
// The decrypted entity's own bytes follow (body byte for byte, so an inner signature still verifies). All
// line ends are canonicalised to CRLF (RFC 8551 section 3.1.1) and the result is written with one allocation.
// Every header field is read (eachField, no count limit), so the work is linear in the sizes of msg and pt.
func serve(msg []byte, pt []byte, status []byte) []byte {
	emitted := pt
	ent := parseEntity(pt)
	protected := false // the entity's own header fields are protected header fields
	// The older header protection (RFC 8551 section 3.1 "MAY wrap a full MIME message in a message/RFC822
	// wrapper"; RFC 9788 Appendix: forwarded=no marks such a wrapper): serve the wrapped message itself.
	if mt, params := ent.contentType(); mt == "message/rfc822" && strings.EqualFold(params["forwarded"], "no") {
		emitted = ent.body
		ent = parseEntity(emitted)
		protected = true
	}
	// A plaintext that does not start with a header field (some agents encrypt bare text) is all body: it
	// gets an empty line in front instead of being taken for malformed header fields.
	sep := ""
	if first, ok := ent.firstField(); ok && !validField(first) {
		ent = entity{body: emitted}
		sep = "\r\n"
		protected = false
	}
	hdr := ent.header // the empty line that ends it stays in rest
	if _, params := ent.contentType(); hasHP(params) {
		protected = true
	}
	keepInner := func(f field) bool {
		return !f.isStatus() && (protected || f.hasPrefix("Content-") || f.is("MIME-Version"))
	}
	replaced := map[string]bool{}
	eachField(hdr, func(f field) {
		if keepInner(f) && (f.is("MIME-Version") || protected && isProtected(f)) {
			replaced[strings.ToLower(string(f.name))] = true
		}
	})
	// RFC 9788 section 4.1: the protected header fields are on the Cryptographic Payload, which for a signed
	// then encrypted message is the first part of the inner multipart/signed; its Content-Type carries hp.
	var copies []field
	copyProtected := func(payload entity) {
		if _, pp := payload.contentType(); hasHP(pp) {
			eachField(payload.header, func(f field) {
				if isProtected(f) && !replaced[strings.ToLower(string(f.name))] {
					copies = append(copies, f)
				}
			})
			for _, f := range copies {
				replaced[strings.ToLower(string(f.name))] = true
			}
		}
	}
	if protected {
		// The entity itself is the payload.
	} else if mt, params := ent.contentType(); mt == "multipart/signed" {
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
		return validOuterField(f) && !f.hasPrefix("Content-") && !f.isStatus() &&
			!replaced[strings.ToLower(string(f.name))]
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
	eachField(hdr, func(f field) {
		if keepInner(f) {
			n += canonLen(f.raw)
		}
	})
	rest := emitted[len(hdr):]
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
	eachField(hdr, func(f field) {
		if keepInner(f) {
			out = appendCanon(out, f.raw)
		}
	})
	if restBare == 0 {
		return append(out, rest...)
	}
	return appendCanon(out, rest)
}

// hasHP reports whether Content-Type parameters mark a Cryptographic Payload with protected header fields:
// the hp parameter of RFC 9788, or the older protected-headers="v1" of the drafts that preceded it.
func hasHP(params map[string]string) bool {
	return params["hp"] != "" || params["protected-headers"] != ""
}

// validField reports whether f starts with a field name and a colon (RFC 5322 section 2.2: printable
// US-ASCII except colon).
func validField(f field) bool {
	c := bytes.IndexByte(f.raw, ':')
	if c <= 0 {
		return false
	}
	name := bytes.TrimRight(f.raw[:c], " \t")
	if len(name) == 0 { // " :" would continue the field above it
		return false
	}
	for _, b := range name {
		if b < 33 || b > 126 {
			return false
		}
	}
	return true
}

// validOuterField reports whether f is a header field that every reader takes for one field: a name of
// printable US-ASCII and a colon on its first line (validField; a first line starting with white space fails
// this), no bare CR (one not followed by LF), and no continuation line of white space only (which some readers
// take for the empty line ending the header).
func validOuterField(f field) bool {
	if !validField(f) {
		return false
	}
	raw := f.raw
	for i := bytes.IndexByte(raw, '\r'); i >= 0; i = bytes.IndexByte(raw, '\r') {
		if i+1 < len(raw) && raw[i+1] != '\n' || i+1 == len(raw) {
			return false
		}
		raw = raw[i+1:]
	}
	for raw := f.raw; ; {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 || i+1 == len(raw) {
			return true
		}
		raw = raw[i+1:]
		line := raw
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j+1]
		}
		if len(bytes.Trim(line, " \t\r\n")) == 0 {
			return false
		}
	}
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

// StripStatusHeaders removes every status field (IsStatusField: an X-Smimeproxy-* name, or one smuggled after a
// bare CR) from the top-level header of msg, reading all of its fields, so an upstream message cannot pretend
// to have been decrypted. Everything else stays byte for byte. It returns msg itself when there is none,
// otherwise a copy.
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
	writeStripped(msg, func(b []byte) { out = append(out, b...) })
	return out
}

// WriteStripped writes StripStatusHeaders(msg) to w piece by piece, without building the copy (for hashing a
// large served message). Writes to w must not fail (a hash.Hash).
func WriteStripped(w io.Writer, msg []byte) {
	writeStripped(msg, func(b []byte) { w.Write(b) })
}

func writeStripped(msg []byte, emit func([]byte)) {
	p := 0 // fields are contiguous from the start: p ends up at the empty line
	eachField(msg, func(f field) {
		if !f.isStatus() {
			emit(f.raw)
		}
		p += len(f.raw)
	})
	emit(msg[p:])
}
