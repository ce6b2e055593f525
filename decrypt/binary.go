package decrypt

import (
	"bytes"
	"encoding/base64"
	"slices"
	"strings"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// A message APPENDed as a literal8 (RFC 3516 section 4.4) may have parts with Content-Transfer-Encoding
// binary. Dovecot stores such a part converted to base64 (its binary converter stream), so that BODY[1] is
// 7-bit and BINARY[1] returns the decoded bytes. An encrypted APPEND is served back byte for byte as
// encrypted (verbatim.go), so EncryptAppend converts first, the same way, and the served copy equals what
// Dovecot serves for the same APPEND made directly:
//
//   - a part (not a multipart, not a message/rfc822) whose header has an unfolded field
//     "Content-Transfer-Encoding: binary" (the value exactly "binary", any case, no surrounding spaces after the
//     colon's) gets that line replaced in place by "Content-Transfer-Encoding: base64" CRLF;
//   - its body (up to the line break before the next boundary delimiter, RFC 2046 section 5.1.1) becomes
//     base64 (RFC 2045 section 6.8) in lines of 76 characters separated by CRLF, without a final line break;
//   - parts of multiparts and the message inside a message/rfc822 part are converted the same way; every
//     other byte stays as it is.
//
// Unlike Dovecot, which converts only literal8 APPENDs, the proxy converts any APPEND it encrypts: a binary
// part cannot be sent in an ordinary literal when it holds NUL, and base64 is an equivalent encoding anyway.

// convertBinaryParts returns msg with its binary parts converted to base64, or msg itself when it has none.
// The message is read with internal/mimepart (its header rule, its parts, Dovecot's nesting bounds).
func convertBinaryParts(msg []byte) []byte {
	if !bytes.Contains(bytes.ToLower(msg), []byte("binary")) {
		return msg
	}
	out, changed := convertPart(nil, mimepart.Parse(msg))
	if !changed {
		return msg
	}
	return out
}

// convertPart appends p converted to out and reports whether anything changed; when nothing did, out is
// out with p.Raw appended.
func convertPart(out []byte, p *mimepart.Part) ([]byte, bool) {
	if len(p.Raw) == len(p.Header) {
		return append(out, p.Raw...), false // no empty line, no body
	}
	head := p.Raw[:len(p.Raw)-len(p.Body)]
	switch {
	case p.Multipart:
		start, end, ok := p.Delimiters()
		if !ok {
			return append(out, p.Raw...), false
		}
		out = append(out, head...)
		changed, prev := false, 0
		for i, c := range p.Parts {
			out = append(out, p.Body[prev:start[i]]...)
			var ch bool
			out, ch = convertPart(out, c)
			changed = changed || ch
			prev = end[i]
		}
		return append(out, p.Body[prev:]...), changed
	case p.MediaType == "message/rfc822" || p.MediaType == "message/global":
		m := p.Message
		if m == nil {
			if p.MediaType != "message/global" {
				return append(out, p.Raw...), false
			}
			m = mimepart.Parse(p.Body)
		}
		out = append(out, head...)
		return convertPart(out, m)
	}
	// The last unfolded "Content-Transfer-Encoding: binary" field.
	cteStart, cteEnd, pos := -1, -1, 0
	mimepart.EachField(p.Header, func(f mimepart.Field) {
		if f.Is("Content-Transfer-Encoding") && bytes.Count(f.Raw, []byte("\n")) <= 1 &&
			strings.EqualFold(string(bytes.TrimLeft(bytes.TrimRight(f.Raw[bytes.IndexByte(f.Raw, ':')+1:], "\r\n"), " \t")), "binary") {
			cteStart, cteEnd = pos, pos+len(f.Raw)
		}
		pos += len(f.Raw)
	})
	if cteStart < 0 {
		return append(out, p.Raw...), false
	}
	body := p.Body
	out = slices.Grow(out, len(p.Raw)+len(body)/3+len(body)/38+64)
	out = append(out, p.Raw[:cteStart]...)
	out = append(out, "Content-Transfer-Encoding: base64\r\n"...)
	out = append(out, p.Raw[cteEnd:len(head)]...)
	for len(body) > 0 {
		n := min(len(body), 57) // 76 characters
		out = base64.StdEncoding.AppendEncode(out, body[:n])
		body = body[n:]
		if len(body) > 0 {
			out = append(out, "\r\n"...)
		}
	}
	return out, true
}
