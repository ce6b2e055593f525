package proxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"
)

// maxBinaryDepth bounds the recursion of binaryEntity into nested multiparts and messages.
const maxBinaryDepth = 50

// bodySection returns BODY[section] of msg without its partial window: the whole message itself (no copy) for
// BODY[], empty for a part that does not exist, else what imapserver extracts.
// exists reports whether a part path names a body part of msg (imapfmt.Structure.PartExists: Dovecot's
// numbering; a part that does not exist is served empty).
func bodySection(msg []byte, exists func(part []int) bool, sec *imap.FetchItemBodySection) []byte {
	if len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierNone {
		return msg
	}
	if len(sec.Part) > 0 && !exists(sec.Part) {
		return nil
	}
	if b, ok := headerFields(msg, sec); ok {
		return b
	}
	whole := *sec
	whole.Partial = nil
	return imapserver.ExtractBodySection(bytes.NewReader(msg), &whole)
}

// binarySection returns BINARY[part] of msg (RFC 3516 section 4.2): content transfer encodings undone, and
// nothing else (no charset conversion). BINARY[] is the whole message converted the way Dovecot converts it:
// every part's base64 or quoted-printable body decoded, and in the header of each such part the
// Content-Transfer-Encoding field replaced by "Content-Transfer-Encoding: binary" (placed last); multipart
// boundaries, preambles and epilogues unchanged. BINARY[n] is part n's body converted the same way (a
// multipart part's children keep their converted headers). It fails with errUnknownCTE when an encoding is
// unknown or broken (RFC 3516 section 4.3).
func binarySection(msg []byte, exists func(part []int) bool, part []int) ([]byte, error) {
	if len(part) == 0 {
		return binaryEntity(msg, true, 0)
	}
	if !exists(part) {
		return nil, nil
	}
	mimeHdr := imapserver.ExtractBodySection(bytes.NewReader(msg), &imap.FetchItemBodySection{Part: part, Specifier: imap.PartSpecifierMIME})
	body := imapserver.ExtractBodySection(bytes.NewReader(msg), &imap.FetchItemBodySection{Part: part})
	ent := make([]byte, 0, len(mimeHdr)+len(body))
	return binaryEntity(append(append(ent, mimeHdr...), body...), false, 0)
}

// binaryEntity converts one MIME entity (header and body); withHeader says whether its header is part of the
// result.
func binaryEntity(ent []byte, withHeader bool, depth int) ([]byte, error) {
	hdrBytes, body := splitEntity(ent)
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(hdrBytes)))
	if err != nil {
		h = textproto.Header{}
	}
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	converted := cte == "base64" || cte == "quoted-printable"
	switch cte {
	case "", "7bit", "8bit", "binary", "base64", "quoted-printable":
	default:
		return nil, errUnknownCTE
	}
	var out []byte
	if withHeader {
		if converted {
			out = appendBinaryHeader(out, hdrBytes)
		} else {
			out = append(out, hdrBytes...)
		}
	}
	mediaType, params, _ := mime.ParseMediaType(h.Get("Content-Type"))
	switch {
	case depth < maxBinaryDepth && strings.HasPrefix(mediaType, "multipart/") && params["boundary"] != "":
		conv, err := binaryMultipart(body, params["boundary"], depth)
		if err != nil {
			return nil, err
		}
		return append(out, conv...), nil
	case depth < maxBinaryDepth && mediaType == "message/rfc822" && !converted:
		conv, err := binaryEntity(body, true, depth+1)
		if err != nil {
			return nil, err
		}
		return append(out, conv...), nil
	}
	dec, err := decodeCTE(hdrBytes, body)
	if err != nil {
		return nil, err
	}
	return append(out, dec...), nil
}

// splitEntity splits ent after the empty line that ends its header (RFC 5322 section 2.1); the header part
// keeps that line. Without an empty line, all of ent is header.
func splitEntity(ent []byte) (header, body []byte) {
	if bytes.HasPrefix(ent, []byte("\r\n")) {
		return ent[:2], ent[2:]
	}
	if bytes.HasPrefix(ent, []byte("\n")) {
		return ent[:1], ent[1:]
	}
	for i := 0; i < len(ent); {
		j := bytes.IndexByte(ent[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
		switch {
		case bytes.HasPrefix(ent[i:], []byte("\r\n")):
			return ent[:i+2], ent[i+2:]
		case bytes.HasPrefix(ent[i:], []byte("\n")):
			return ent[:i+1], ent[i+1:]
		}
	}
	return ent, nil
}

// appendBinaryHeader appends hdr (ending with its empty line) without its Content-Transfer-Encoding fields and
// with "Content-Transfer-Encoding: binary" as the last field.
func appendBinaryHeader(out, hdr []byte) []byte {
	skipping := false
	for len(hdr) > 0 {
		line := hdr
		if i := bytes.IndexByte(hdr, '\n'); i >= 0 {
			line, hdr = hdr[:i+1], hdr[i+1:]
		} else {
			hdr = nil
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 { // the empty line
			out = append(out, "Content-Transfer-Encoding: binary\r\n"...)
			return append(out, line...)
		}
		if trimmed[0] == ' ' || trimmed[0] == '\t' {
			if !skipping {
				out = append(out, line...)
			}
			continue
		}
		name, _, _ := bytes.Cut(trimmed, []byte(":"))
		skipping = strings.EqualFold(strings.TrimSpace(string(name)), "Content-Transfer-Encoding")
		if !skipping {
			out = append(out, line...)
		}
	}
	return append(out, "Content-Transfer-Encoding: binary\r\n"...)
}

// binaryMultipart converts each body part of a multipart body (RFC 2046 section 5.1.1) with its header,
// copying delimiter lines, preamble and epilogue.
func binaryMultipart(body []byte, boundary string, depth int) ([]byte, error) {
	delim := []byte("--" + boundary)
	// starts of delimiter lines, and whether each closes the multipart
	type line struct {
		start, end int // end: after the line break
		close      bool
	}
	var lines []line
	for i := 0; i < len(body); {
		j := bytes.IndexByte(body[i:], '\n')
		end := len(body)
		if j >= 0 {
			end = i + j + 1
		}
		l := bytes.TrimRight(body[i:end], "\r\n")
		if bytes.HasPrefix(l, delim) {
			rest := l[len(delim):]
			closing := bytes.HasPrefix(rest, []byte("--"))
			if closing {
				rest = rest[2:]
			}
			if len(bytes.TrimRight(rest, " \t")) == 0 {
				lines = append(lines, line{i, end, closing})
				if closing {
					break
				}
			}
		}
		i = end
	}
	if len(lines) == 0 {
		return body, nil
	}
	out := append([]byte(nil), body[:lines[0].end]...)
	for k, d := range lines {
		if d.close {
			return append(out, body[d.end:]...), nil
		}
		partEnd := len(body)
		next := -1
		if k+1 < len(lines) {
			next = lines[k+1].start
			partEnd = next
			// the line break before a delimiter belongs to the delimiter
			if partEnd > d.end && body[partEnd-1] == '\n' {
				partEnd--
				if partEnd > d.end && body[partEnd-1] == '\r' {
					partEnd--
				}
			}
		}
		conv, err := binaryEntity(body[d.end:partEnd], true, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, conv...)
		if next < 0 {
			return out, nil
		}
		out = append(out, body[partEnd:lines[k+1].end]...)
	}
	return out, nil
}

// errUnknownCTE is the NO of RFC 3516 section 4.3 for a part whose transfer encoding cannot be undone.
var errUnknownCTE = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnknownCTE, Text: "Unknown Content-Transfer-Encoding"}

func decodeCTE(hdr, body []byte) ([]byte, error) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(hdr)))
	if err != nil {
		h = textproto.Header{}
	}
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	switch cte {
	case "", "7bit", "8bit", "binary":
		return body, nil
	case "base64":
		clean := make([]byte, 0, len(body))
		for _, c := range body {
			if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
				clean = append(clean, c)
			}
		}
		clean = bytes.TrimRight(clean, "=")
		out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
		n, err := base64.RawStdEncoding.Decode(out, clean)
		if err != nil {
			return nil, errUnknownCTE
		}
		return out[:n], nil
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if err != nil {
			return nil, errUnknownCTE
		}
		return out, nil
	}
	return nil, errUnknownCTE
}
