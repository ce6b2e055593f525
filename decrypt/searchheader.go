package decrypt

import (
	"bytes"
	"encoding/base64"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/unicode/norm"

	"github.com/smimeproxy/smimeproxy/internal/imapfmt"
)

// MatchSearchHeader reports whether the top-level header of served (a message as Rewrite returned it, or its
// stored header block) matches the SEARCH key (RFC 9051 section 6.4.4) BCC, CC, FROM, TO or SUBJECT with
// needle, or HEADER name needle, as Dovecot evaluates that key over a message stored with these bytes
// (index-search.c search_header_arg): a field of that name whose value — unfolded, for address keys parsed
// and written back as "name <mailbox@domain>", for SUBJECT with white space runs as one space, then with
// encoded words decoded (RFC 2047) — contains needle, compared after Dovecot's normalization (title case,
// decomposed, so "cafe" finds "Café"). An empty needle matches when such a field exists; a
// needle that normalizes to nothing matches nothing. Each key is judged alone: Dovecot 2.3 lets a later key of
// another kind on the same field line reuse the value an earlier key decoded (FROM x HEADER From y compares y
// with the written-back addresses), which is not imitated.
func MatchSearchHeader(served []byte, key, name, needle string) bool {
	kind := imapfmt.HeaderPlain
	switch strings.ToUpper(key) {
	case "FROM", "TO", "CC", "BCC":
		kind, name = imapfmt.HeaderAddress, key
	case "SUBJECT":
		kind, name = imapfmt.HeaderCompressLWSP, "Subject"
	}
	n := searchFold(needle)
	found := false
	imapfmt.SearchValues(served, name, kind, func(v []byte) bool {
		switch {
		case needle == "":
			found = true
		case n != "":
			found = strings.Contains(searchFold(decodeHeaderDovecot(v)), n)
		}
		return !found
	})
	return found
}

// searchFold is Dovecot's uni_utf8_to_decomposed_titlecase, the normalizer its searches compare with: each
// character in title case, then decomposed (Dovecot takes one level of the canonical or compatibility
// decomposition, here NFKD), so that "cafe" finds "Café" (E and a combining acute) but "cafe olberg" does not
// find "Café Ölberg"; invalid UTF-8 as U+FFFD (one for a run).
func searchFold(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToUpper(s)
	}
	var b strings.Builder
	lastBad := false
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if r == utf8.RuneError && size <= 1 {
			if !lastBad {
				b.WriteRune(utf8.RuneError)
			}
			lastBad = true
			continue
		}
		lastBad = false
		t := unicode.ToTitle(r)
		if t < 0x80 {
			b.WriteRune(t)
			continue
		}
		b.WriteString(norm.NFKD.String(string(t)))
	}
	return b.String()
}

// decodeHeaderDovecot decodes the encoded words of a header value as Dovecot's message_header_decode_utf8
// does, which is more lenient than RFC 2047: an encoded word is found anywhere ("=?" charset "?" B or Q "?"
// text "?="), white space only between two of them (or before the first) is dropped, a word that does not
// parse is kept as text, a charset that is not known keeps the decoded octets, and B or Q text that is partly
// invalid gives what decoded.
func decodeHeaderDovecot(v []byte) string {
	var out strings.Builder
	start := 0
	for pos := 0; pos+1 < len(v); {
		if v[pos] != '=' || v[pos+1] != '?' {
			pos++
			continue
		}
		if pos != start && len(bytes.Trim(v[start:pos], " \t\r\n")) != 0 {
			out.WriteString(string(v[start:pos]))
		}
		pos += 2
		charset, text, n := encodedWord(v[pos:])
		if n == 0 {
			start = pos - 2
			continue
		}
		pos += n
		if len(text) > 0 {
			out.WriteString(toUTF8(text, charset))
		}
		start = pos
	}
	if start < len(v) {
		out.Write(v[start:])
	}
	return out.String()
}

// encodedWord parses "charset?enc?text?=" at the start of d (after "=?"); n is the length parsed, 0 when it
// is not an encoded word.
func encodedWord(d []byte) (charset string, text []byte, n int) {
	var q [3]int
	num, i := 0, 0
	for ; i < len(d); i++ {
		if d[i] == '?' {
			q[num] = i
			num++
			if num == 3 {
				break
			}
		}
	}
	if i+1 >= len(d) || d[i+1] != '=' {
		return "", nil, 0
	}
	enc := d[q[0]+1 : q[1]]
	data := d[q[1]+1 : q[2]]
	if len(enc) == 0 {
		return "", nil, 0
	}
	switch enc[0] {
	case 'q', 'Q':
		text = decodeQ(data)
	case 'b', 'B':
		text = decodeB(data)
	default:
		return "", nil, 0
	}
	return string(d[:q[0]]), text, q[2] + 2
}

// decodeQ is Dovecot's quoted_printable_q_decode: "_" is a space, "=XX" an octet, an invalid "=" skipped.
func decodeQ(d []byte) []byte {
	out := make([]byte, 0, len(d))
	for i := 0; i < len(d); i++ {
		switch c := d[i]; {
		case c == '_':
			out = append(out, ' ')
		case c == '=':
			if i+2 < len(d) && unhex(d[i+1]) >= 0 && unhex(d[i+2]) >= 0 {
				out = append(out, byte(unhex(d[i+1])<<4|unhex(d[i+2])))
				i += 2
			}
		default:
			out = append(out, c)
		}
	}
	return out
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// decodeB decodes base64 text up to its first invalid character, as Dovecot shows what decoded so far.
func decodeB(d []byte) []byte {
	s := strings.TrimRight(string(d), "=")
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			s = s[:i]
			break
		}
	}
	if len(s)%4 == 1 {
		s = s[:len(s)-1]
	}
	out, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return nil
	}
	return out
}

// toUTF8 converts text from charset; UTF-8 and unknown charsets keep the octets (invalid UTF-8 is folded to
// U+FFFD by searchFold).
func toUTF8(text []byte, charset string) string {
	cs := strings.ToLower(charset)
	if cs == "" || cs == "utf-8" || cs == "utf8" || cs == "us-ascii" {
		return string(text)
	}
	enc, err := htmlindex.Get(cs)
	if err != nil {
		return string(text)
	}
	out, err := enc.NewDecoder().Bytes(text)
	if err != nil {
		return string(text)
	}
	return string(out)
}
