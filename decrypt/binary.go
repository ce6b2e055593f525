package decrypt

import (
	"bytes"
	"encoding/base64"
	"mime"
	"strings"
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

// maxBinaryDepth bounds the nesting of parts the conversion descends into.
const maxBinaryDepth = 50

// convertBinaryParts returns msg with its binary parts converted to base64, or msg itself when it has none.
func convertBinaryParts(msg []byte) []byte {
	if !bytes.Contains(bytes.ToLower(msg), []byte("binary")) {
		return msg
	}
	out, changed := convertEntity(msg, 0)
	if !changed {
		return msg
	}
	return out
}

// convertEntity converts one entity (header, blank line, body).
func convertEntity(ent []byte, depth int) ([]byte, bool) {
	if depth > maxBinaryDepth {
		return ent, false
	}
	hdrEnd, bodyStart, ok := headerEnd(ent)
	if !ok {
		return ent, false // no body
	}
	header, body := ent[:hdrEnd], ent[bodyStart:]
	ctype, params := "text/plain", map[string]string(nil)
	cteStart, cteEnd := -1, -1
	for start := 0; start < len(header); {
		end := lineEnd(header, start)
		line := bytes.TrimRight(header[start:end], "\r\n")
		// The logical field runs over its continuation lines.
		fend := end
		for fend < len(header) && (header[fend] == ' ' || header[fend] == '\t') {
			fend = lineEnd(header, fend)
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if found {
			switch strings.ToLower(string(bytes.TrimRight(name, " \t"))) {
			case "content-type":
				if t, p, err := mime.ParseMediaType(unfold(header[start:fend], len(name)+1)); err == nil {
					ctype, params = t, p
				}
			case "content-transfer-encoding":
				if fend == end && strings.EqualFold(string(bytes.TrimLeft(value, " \t")), "binary") {
					cteStart, cteEnd = start, end
				}
			}
		}
		start = fend
	}
	switch {
	case strings.HasPrefix(ctype, "multipart/"):
		b := params["boundary"]
		if b == "" {
			return ent, false
		}
		nb, changed := convertMultipart(body, b, depth)
		if !changed {
			return ent, false
		}
		return append(bytes.Clone(ent[:bodyStart]), nb...), true
	case ctype == "message/rfc822" || ctype == "message/global":
		nb, changed := convertEntity(body, depth+1)
		if !changed {
			return ent, false
		}
		return append(bytes.Clone(ent[:bodyStart]), nb...), true
	case cteStart < 0:
		return ent, false
	}
	out := make([]byte, 0, len(ent)+len(body)/3+len(body)/38+64)
	out = append(out, ent[:cteStart]...)
	out = append(out, "Content-Transfer-Encoding: base64\r\n"...)
	out = append(out, ent[cteEnd:bodyStart]...)
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

// convertMultipart converts the parts of a multipart body with boundary b.
func convertMultipart(body []byte, b string, depth int) ([]byte, bool) {
	delim := []byte("--" + b)
	// A part runs from the end of one delimiter line to the line break before the next.
	var out []byte
	changed := false
	prevBodyStart := -1
	last := 0
	for pos := 0; pos <= len(body); {
		end := lineEnd(body, pos)
		if bytes.HasPrefix(body[pos:end], delim) && isDelimiterLine(body[pos+len(delim):end]) {
			if prevBodyStart >= 0 {
				partEnd := pos
				// The line break before the delimiter belongs to it.
				if partEnd > prevBodyStart && body[partEnd-1] == '\n' {
					partEnd--
					if partEnd > prevBodyStart && body[partEnd-1] == '\r' {
						partEnd--
					}
				}
				if np, ok := convertEntity(body[prevBodyStart:partEnd], depth+1); ok {
					out = append(out, body[last:prevBodyStart]...)
					out = append(out, np...)
					last = partEnd
					changed = true
				}
			}
			if bytes.HasPrefix(body[pos+len(delim):end], []byte("--")) {
				break // close delimiter: the epilogue stays
			}
			prevBodyStart = end
		}
		if end == pos {
			break
		}
		pos = end
	}
	if !changed {
		return body, false
	}
	return append(out, body[last:]...), true
}

// isDelimiterLine reports whether rest (what follows "--boundary" on its line) completes a delimiter line:
// nothing, or "--", then only white space (RFC 2046 section 5.1.1).
func isDelimiterLine(rest []byte) bool {
	rest = bytes.TrimPrefix(rest, []byte("--"))
	return len(bytes.TrimRight(rest, " \t\r\n")) == 0
}

// lineEnd returns the index after the line break of the line starting at i (len(b) when there is none).
func lineEnd(b []byte, i int) int {
	if j := bytes.IndexByte(b[i:], '\n'); j >= 0 {
		return i + j + 1
	}
	return len(b)
}

// headerEnd finds the blank line ending the header of ent: the header's end (after its last field's line
// break) and the body's start; ok is false when ent has no blank line.
func headerEnd(ent []byte) (hdrEnd, bodyStart int, ok bool) {
	for pos := 0; pos < len(ent); {
		end := lineEnd(ent, pos)
		if l := ent[pos:end]; len(bytes.TrimRight(l, "\r\n")) == 0 && end > pos && l[len(l)-1] == '\n' {
			return pos, end, true
		}
		pos = end
	}
	return 0, 0, false
}

// unfold returns a field's value (field from its name, the value starting at off) on one line.
func unfold(field []byte, off int) string {
	v := string(field[off:])
	v = strings.NewReplacer("\r\n", "", "\n", "").Replace(v)
	return strings.TrimSpace(v)
}
