// Package mimepart is the project's one MIME reader: it splits a message into header fields (RFC 5322 section
// 2.2), header and body (section 2.1), the parts of a multipart (RFC 2046 section 5.1.1) and an encapsulated
// message (RFC 2046 section 5.2.1), numbers parts as IMAP does (RFC 9051 section 6.4.5) and undoes content
// transfer encodings (RFC 2045 section 6). Every rule about how a message is read is decided here once: what a
// header field is (bare CR, bare LF, continuation lines, a first line that is indented, a line without a
// colon), where a header ends, where a part starts and ends, and what an unknown encoding means.
//
// It is pure: bytes in, slices of those bytes (or fresh buffers for decoded bodies) out, no I/O, so crypto/smime
// can use it as well as decrypt and proxy. The tree is bounded (MaxDepth, MaxParts) and built in time linear in
// the input for each nesting level; it never panics on any input (fuzzed).
//
// Not here: the byte-exact imitation of Dovecot's parser that ENVELOPE and BODYSTRUCTURE need
// (internal/imapfmt), and what a status field is (crypto/smime/status.go, which asks EachField for fields).
package mimepart

import (
	"bytes"
	"strings"
)

// Field is one header field as received (RFC 5322 section 2.2): its first line, any continuation lines, and its
// final line break (absent only on a last line without one). The slices alias the input.
type Field struct {
	// Name is what precedes the first colon of the first line, or the whole line when there is none (not a
	// valid field, but some readers accept it), without surrounding spaces, tabs, CRs and LFs.
	Name []byte
	// Raw is the whole field.
	Raw []byte
}

// EachField calls fn for every header field at the start of b, in order, and returns the offset of the body:
// just past the empty line that ends the header, or len(b) when there is none. The rules, the one definition
// of a header for the whole project:
//
//   - a line ends at LF (with or without a CR before it); a bare CR does not end a line;
//   - the header ends at the first line that is exactly LF or CRLF (RFC 5322 section 2.1);
//   - a line starting with a space or a tab continues the field before it (folding, section 2.2.3), except on
//     the very first line, where it starts a field of its own;
//   - any other line starts a field, whether or not it has a colon;
//   - there is no limit on the number of fields or the length of a line: one linear pass.
//
// Fields are contiguous: the first starts at 0 and each starts where the previous ended.
func EachField(b []byte, fn func(Field)) int {
	end, _ := scan(b, fn)
	return end
}

// scan is EachField that also reports whether the empty line was found.
func scan(b []byte, fn func(Field)) (int, bool) {
	p := 0
	cur := -1 // start of the field being collected
	var name []byte
	flush := func(end int) {
		if cur >= 0 {
			fn(Field{Name: name, Raw: b[cur:end]})
			cur = -1
		}
	}
	for p < len(b) {
		end := bytes.IndexByte(b[p:], '\n')
		if end < 0 {
			end = len(b)
		} else {
			end += p + 1
		}
		line := b[p:end]
		if isBlankLine(line) {
			flush(p)
			return end, true
		}
		if (line[0] == ' ' || line[0] == '\t') && cur >= 0 {
			// Continuation of the current field (RFC 5322 section 2.2.3 folding).
		} else {
			flush(p)
			cur = p
			name = line
			if c := bytes.IndexByte(line, ':'); c >= 0 {
				name = line[:c]
			}
			name = bytes.Trim(name, " \t\r\n")
		}
		p = end
	}
	flush(p)
	return len(b), false
}

func isBlankLine(line []byte) bool {
	return len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n'
}

// HeaderComplete reports whether b, the start of a message, holds the whole header: the empty line that ends it
// (EachField's rule). A reader that takes a message in pieces uses it to know when it has read enough.
func HeaderComplete(b []byte) bool {
	_, found := scan(b, func(Field) {})
	return found
}

// Value returns the unfolded value of f: everything after the first colon with CRLF and LF removed (RFC 5322
// section 2.2.3) and surrounding white space trimmed; "" for a line without a colon.
func (f Field) Value() string {
	c := bytes.IndexByte(f.Raw, ':')
	if c < 0 {
		return ""
	}
	v := f.Raw[c+1:]
	if bytes.IndexByte(v, '\n') >= 0 {
		v = bytes.ReplaceAll(bytes.ReplaceAll(v, []byte("\r\n"), nil), []byte("\n"), nil)
	}
	return strings.TrimSpace(string(v))
}

// Is reports whether f is called name, compared case-insensitively (RFC 5322 section 1.2.2).
func (f Field) Is(name string) bool { return strings.EqualFold(string(f.Name), name) }

// HasPrefix reports whether f's name starts with prefix, compared case-insensitively.
func (f Field) HasPrefix(prefix string) bool {
	return len(f.Name) >= len(prefix) && strings.EqualFold(string(f.Name[:len(prefix)]), prefix)
}

// Values returns the unfolded values (Field.Value) of every field called name in the header at the start of
// msg, in order.
func Values(msg []byte, name string) []string {
	var out []string
	EachField(msg, func(f Field) {
		if f.Is(name) {
			out = append(out, f.Value())
		}
	})
	return out
}

// Get returns the value of the first field called name in the header at the start of msg, or "".
func Get(msg []byte, name string) string {
	v, found := "", false
	EachField(msg, func(f Field) {
		if !found && f.Is(name) {
			v, found = f.Value(), true
		}
	})
	return v
}

// Split splits an entity (a message or a body part) into its header fields (without the empty line that ends
// them) and its body (after that line; empty when there is none, and then the header is all of b).
func Split(b []byte) (header, body []byte) {
	n := 0
	end := EachField(b, func(f Field) { n += len(f.Raw) })
	return b[:n], b[end:]
}

// SplitBlock is Split with the empty line kept at the end of the header: the header block as IMAP's
// RFC822.HEADER and BODY[HEADER] return it (RFC 9051 section 6.4.5).
func SplitBlock(b []byte) (header, body []byte) {
	end := EachField(b, func(Field) {})
	return b[:end], b[end:]
}
