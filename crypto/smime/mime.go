package smime

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// The minimal, allocation-light MIME reader this package needs: header fields of one entity, its Content-Type
// and Content-Transfer-Encoding, and the parts of a multipart/signed. It works on byte slices of the input and
// never copies bodies. Line ends may be CRLF or bare LF.

// field is one header field as received (RFC 5322 section 2.2), including folded continuation lines and its
// final line break (absent only on a last line without one).
type field struct {
	name []byte // field name, without the colon; empty for a malformed line without a colon
	raw  []byte
}

// entity is a MIME entity split into header and body (RFC 2045 section 2.4, RFC 5322 section 2.1). Its header
// fields are read with eachField whenever they are needed: there is no limit on their number and nothing is
// stored per field.
type entity struct {
	header []byte // the header fields, without the empty line that ends them
	body   []byte // after the empty line; empty when there is none
}

// parseEntity splits b into header and body. The header ends at the first empty line; a header without one
// takes all of b.
func parseEntity(b []byte) entity {
	n := 0
	end := eachField(b, func(f field) { n += len(f.raw) }) // fields are contiguous from 0
	return entity{header: b[:n], body: b[end:]}
}

// firstField returns the first header field of e, if any.
func (e *entity) firstField() (field, bool) {
	var first field
	found := false
	eachField(e.header, func(f field) {
		if !found {
			first, found = f, true
		}
	})
	return first, found
}

// eachField calls fn for every header field at the start of b, in order, and returns the offset of the body:
// just past the empty line that ends the header, or len(b) when there is none. Fields are contiguous: the
// first starts at 0 and each starts where the previous ended.
func eachField(b []byte, fn func(field)) int {
	p := 0
	cur := -1 // start of the field being collected
	var name []byte
	flush := func(end int) {
		if cur >= 0 {
			fn(field{name: name, raw: b[cur:end]})
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
			return end
		}
		if (line[0] == ' ' || line[0] == '\t') && cur >= 0 {
			// Continuation of the current field (RFC 5322 section 2.2.3 folding).
		} else {
			flush(p)
			cur = p
			// The name is what precedes the colon, or the whole line when there is none (not a valid
			// field, but some readers accept it), without surrounding white space.
			name = line
			if c := bytes.IndexByte(line, ':'); c >= 0 {
				name = line[:c]
			}
			name = bytes.Trim(name, " \t\r\n")
		}
		p = end
	}
	flush(p)
	return len(b)
}

func isBlankLine(line []byte) bool {
	return len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n'
}

// value returns the unfolded value of f: everything after the colon with line breaks removed and surrounding
// white space trimmed.
func (f field) value() string {
	c := bytes.IndexByte(f.raw, ':')
	if c < 0 {
		return ""
	}
	v := f.raw[c+1:]
	if bytes.IndexByte(v, '\n') >= 0 {
		v = bytes.ReplaceAll(bytes.ReplaceAll(v, []byte("\r\n"), nil), []byte("\n"), nil)
	}
	return strings.TrimSpace(string(v))
}

func (f field) is(name string) bool { return strings.EqualFold(string(f.name), name) }

func (f field) hasPrefix(prefix string) bool {
	return len(f.name) >= len(prefix) && strings.EqualFold(string(f.name[:len(prefix)]), prefix)
}

// isStatus reports whether f is a status field (IsStatusField): by name, or after a bare CR inside the field,
// which some readers take for a line end.
func (f field) isStatus() bool { return isStatusField(f.name, f.raw) }

// get returns the value of the first field called name, or "".
func (e *entity) get(name string) string {
	v, found := "", false
	eachField(e.header, func(f field) {
		if !found && f.is(name) {
			v, found = f.value(), true
		}
	})
	return v
}

// contentType returns the lowercased media type and parameters of e (RFC 2045 section 5). A missing or
// unparsable Content-Type is text/plain (RFC 2045 section 5.2); a media type with broken parameters keeps
// the type and whatever parameters parsed.
func (e *entity) contentType() (string, map[string]string) {
	v := e.get("Content-Type")
	if v == "" {
		return "text/plain", nil
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return "text/plain", nil
	}
	return strings.ToLower(mt), params
}

// filename returns the filename parameter of the Content-Disposition field (RFC 2183 section 2.3), or "".
func (e *entity) filename() string {
	v := e.get("Content-Disposition")
	if v == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(v)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return ""
	}
	return params["filename"]
}

// smimeLabel reports whether e is labelled as a CMS object (RFC 8551 section 3.2.1:
// application/pkcs7-mime and the older application/x-pkcs7-mime; some agents send application/octet-stream
// named smime.p7m) and returns its lowercased smime-type parameter (section 3.2.2), possibly "".
func smimeLabel(e *entity) (bool, string) {
	mt, params := e.contentType()
	if !IsSMIMEType(mt, params) && (mt != "application/octet-stream" || !strings.EqualFold(e.filename(), "smime.p7m")) {
		return false, ""
	}
	return true, strings.ToLower(params["smime-type"])
}

// IsSMIMEType reports whether a part with this media type and these Content-Type parameters (as in an IMAP
// BODYSTRUCTURE, RFC 9051 section 7.5.2) may hold an S/MIME encryption layer: application/pkcs7-mime or
// application/x-pkcs7-mime (RFC 8551 section 3.2.1; smime-type is not trusted, it may be missing or be
// signed-data around an encrypted entity), or application/octet-stream with name=smime.p7m. It is a cheap
// pre-check for deciding which messages to fetch whole; Process decides by the content. Callers should apply
// it to the top-level body and, for a multipart/signed top level, to its first part. Parameter names are
// matched case-insensitively.
func IsSMIMEType(mediaType string, params map[string]string) bool {
	switch strings.ToLower(mediaType) {
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		return true
	case "application/octet-stream":
		for k, v := range params {
			if strings.EqualFold(k, "name") && strings.EqualFold(strings.TrimSpace(v), "smime.p7m") {
				return true
			}
		}
	}
	return false
}

// multipartParts returns up to max+1 body parts of a multipart body with the given boundary (RFC 2046
// section 5.1.1): each part runs from after its delimiter line to before the line break that precedes the
// next delimiter. The preamble and epilogue are dropped. A body without any delimiter has no parts.
func multipartParts(body []byte, boundary string, max int) [][]byte {
	if boundary == "" || len(boundary) > 200 {
		return nil
	}
	dash := "--" + boundary
	var parts [][]byte
	start := -1 // start of the current part's content, -1 before the first delimiter
	p := 0
	for p <= len(body) && len(parts) <= max {
		// Find the next line beginning with the delimiter.
		var at int
		if p == 0 && bytes.HasPrefix(body, []byte(dash)) {
			at = 0
		} else {
			from := p
			if from > 0 {
				from-- // the line break ending the previous delimiter line may precede the next delimiter
			}
			i := bytes.Index(body[from:], []byte("\n"+dash))
			if i < 0 {
				break
			}
			at = from + i + 1
		}
		q := at + len(dash)
		closing := bytes.HasPrefix(body[q:], []byte("--"))
		if closing {
			q += 2
		}
		for q < len(body) && (body[q] == ' ' || body[q] == '\t') {
			q++ // transport padding (RFC 2046 section 5.1.1)
		}
		lineEnd := -1
		switch {
		case q == len(body):
			lineEnd = q
		case body[q] == '\n':
			lineEnd = q + 1
		case body[q] == '\r' && q+1 < len(body) && body[q+1] == '\n':
			lineEnd = q + 2
		case closing:
			lineEnd = q // a close delimiter followed by junk on its line still closes
		}
		if lineEnd < 0 { // the boundary string is only a prefix of this line
			p = at + 1
			continue
		}
		if start >= 0 {
			end := at
			if end > start && body[end-1] == '\n' {
				end--
				if end > start && body[end-1] == '\r' {
					end--
				}
			}
			parts = append(parts, body[start:end])
		}
		if closing {
			return parts
		}
		start = lineEnd
		p = lineEnd
		if p >= len(body) {
			break
		}
	}
	if start >= 0 && len(parts) <= max {
		parts = append(parts, body[start:]) // unterminated last part
	}
	return parts
}

var errEncoding = errors.New("smime: bad content transfer encoding")

// decodeBody undoes e's Content-Transfer-Encoding (RFC 2045 section 6) into a fresh buffer that the caller
// owns. It fails with errEncoding for broken base64 or quoted-printable and for unknown encodings.
func decodeBody(e *entity) ([]byte, error) {
	switch cte := strings.ToLower(e.get("Content-Transfer-Encoding")); cte {
	case "base64":
		return decodeBase64(e.body)
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(e.body)))
		if err != nil {
			return nil, errEncoding
		}
		return out, nil
	case "", "7bit", "8bit", "binary":
		return append([]byte(nil), e.body...), nil
	default:
		return nil, errEncoding
	}
}

// decodeBase64 decodes a base64 body (RFC 2045 section 6.8) with line breaks into a buffer of (nearly) the
// exact decoded size. Spaces and tabs are tolerated by a slower path; missing padding too.
func decodeBase64(src []byte) ([]byte, error) {
	n := len(src) - bytes.Count(src, []byte{'\n'}) - bytes.Count(src, []byte{'\r'})
	dst := make([]byte, base64.StdEncoding.DecodedLen(n+3))
	k, err := base64.StdEncoding.Decode(dst, src)
	if err == nil {
		return dst[:k], nil
	}
	// Slow path: drop all white space and padding, then decode without padding.
	clean := make([]byte, 0, n)
	for _, c := range src {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			clean = append(clean, c)
		}
	}
	clean = bytes.TrimRight(clean, "=")
	k, err = base64.RawStdEncoding.Decode(dst, clean)
	if err != nil {
		return nil, errEncoding
	}
	return dst[:k], nil
}

// DER of the ContentInfo content types that Options.Owned may decode in place (RFC 5652 section 6.1,
// RFC 5083 section 1.1).
var (
	envelopedDataOID     = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03}
	authEnvelopedDataOID = []byte{0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17}
)

// looksEnvelopedBase64 reports whether the base64 text b starts with a ContentInfo (a SEQUENCE of definite or
// indefinite length) of type enveloped-data or authEnveloped-data. It decodes only the first few bytes.
func looksEnvelopedBase64(b []byte) bool {
	var head [48]byte
	n, _ := decodeBase64Prefix(head[:], b)
	h := head[:n]
	if len(h) < 2 || h[0] != 0x30 {
		return false
	}
	p := 2
	if h[1] > 0x80 {
		p += int(h[1] & 0x7f)
	}
	return p < len(h) && (bytes.HasPrefix(h[p:], envelopedDataOID) || bytes.HasPrefix(h[p:], authEnvelopedDataOID))
}

// base64Value maps a base64 alphabet byte (RFC 4648 section 4) to its value; 0xfe marks white space that
// RFC 2045 section 6.8 lets decoders skip, 0xff anything else.
var base64Value = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = byte(i)
	}
	for _, c := range " \t\r\n" {
		t[c] = 0xfe
	}
	return t
}()

// decodeBase64Prefix decodes base64 text from src into dst until dst is full (a whole number of 3-byte groups
// only), src ends, or padding or an invalid byte is met; it returns the bytes written and read.
func decodeBase64Prefix(dst, src []byte) (int, int) {
	w, r := 0, 0
	var acc uint32
	k := 0
	for r < len(src) && w+3 <= len(dst) {
		v := base64Value[src[r]]
		if v == 0xff {
			break
		}
		r++
		if v == 0xfe {
			continue
		}
		acc = acc<<6 | uint32(v)
		if k++; k == 4 {
			dst[w], dst[w+1], dst[w+2] = byte(acc>>16), byte(acc>>8), byte(acc)
			w += 3
			acc, k = 0, 0
		}
	}
	return w, r
}

// decodeBase64InPlace decodes a base64 body (RFC 2045 section 6.8: line breaks and other white space ignored,
// padding optional) into the start of b itself and returns that prefix: the write position never passes the
// read position, so no byte is overwritten before it is read. It fails with errEncoding for a byte outside
// the alphabet or a truncated last group; b is then partly overwritten.
func decodeBase64InPlace(b []byte) ([]byte, error) {
	w := 0
	var acc uint32
	k := 0
	r := 0
	for ; r < len(b); r++ {
		v := base64Value[b[r]]
		if v == 0xfe {
			continue
		}
		if v == 0xff {
			if b[r] == '=' {
				break
			}
			return nil, errEncoding
		}
		acc = acc<<6 | uint32(v)
		if k++; k == 4 {
			b[w], b[w+1], b[w+2] = byte(acc>>16), byte(acc>>8), byte(acc)
			w += 3
			acc, k = 0, 0
		}
	}
	// Only padding and white space may follow.
	for ; r < len(b); r++ {
		if c := b[r]; c != '=' && base64Value[c] != 0xfe {
			return nil, errEncoding
		}
	}
	switch k {
	case 0:
	case 2:
		b[w] = byte(acc >> 4)
		w++
	case 3:
		b[w], b[w+1] = byte(acc>>10), byte(acc>>2)
		w += 2
	default:
		return nil, errEncoding
	}
	return b[:w], nil
}
