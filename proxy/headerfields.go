package proxy

import (
	"bytes"

	"github.com/emersion/go-imap/v2"
)

// headerFields answers BODY[HEADER.FIELDS (...)] and BODY[HEADER.FIELDS.NOT (...)] of a message's top-level
// header (RFC 9051 section 6.4.5) straight from its bytes: the selected fields as they are, in their order,
// then the empty line. It is what a header sync asks of every message, so it skips the general section
// extractor (a MIME parse per message). It reports false, and the caller uses the general one, unless the
// header is plain: CRLF line ends only, an empty line that ends it, every line a field ("name:" with a name of
// printable characters) or the continuation of one. What it returns for such a header is what the general
// extractor returns (proxy/headerfields_test.go compares them).
func headerFields(msg []byte, sec *imap.FetchItemBodySection) ([]byte, bool) {
	if len(sec.Part) != 0 || sec.Specifier != imap.PartSpecifierHeader {
		return nil, false
	}
	names, not := sec.HeaderFields, false
	if len(sec.HeaderFieldsNot) > 0 {
		if len(names) > 0 {
			return nil, false
		}
		names, not = sec.HeaderFieldsNot, true
	}
	if len(names) == 0 {
		return nil, false
	}
	out := make([]byte, 0, 256)
	keep := false // whether the field being read is selected
	for p := 0; ; {
		first := p == 0
		eol := bytes.Index(msg[p:], []byte("\r\n"))
		if eol < 0 {
			return nil, false // no empty line
		}
		line := msg[p : p+eol+2]
		p += eol + 2
		if len(line) == 2 {
			return append(out, "\r\n"...), true
		}
		if bytes.IndexByte(line[:len(line)-2], '\r') >= 0 || bytes.IndexByte(line[:len(line)-2], '\n') >= 0 {
			return nil, false // a bare CR or LF
		}
		if line[0] == ' ' || line[0] == '\t' {
			if first {
				return nil, false // a continuation with nothing before it
			}
			if keep {
				out = append(out, line...)
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, false
		}
		name := line[:colon]
		for _, c := range name {
			if c <= ' ' || c > '~' {
				return nil, false
			}
		}
		keep = not
		for _, n := range names {
			if len(n) == len(name) && bytes.EqualFold(name, []byte(n)) {
				keep = !not
				break
			}
		}
		if keep {
			out = append(out, line...)
		}
	}
}
