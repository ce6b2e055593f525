package decrypt

import (
	"fmt"
	"strings"

	"github.com/smimeproxy/smimeproxy/internal/imapfmt"
)

// SortKey returns the string by which Dovecot 2.3 orders a message under the SORT key (RFC 5256 section 3:
// SUBJECT, FROM, TO, CC; RFC 5957: DISPLAYFROM, DISPLAYTO) when the top-level header of the message (a header
// block, or a whole message) is header, as index-sort.c index_sort_header_get computes it; messages are
// ordered by these strings compared octet by octet (strcmp), ties by the next key and finally by sequence
// number. The first field of the name is used:
//   - SUBJECT: the base subject of RFC 5256 section 2.1 as imap-base-subject.c extracts it (encoded words
//     decoded, normalized as searchFold does, white space packed, "Re:", "Fwd:", "[blob]" leaders and "(fwd)"
//     trailers removed, "[Fwd: ...]" unwrapped); a missing Subject is "".
//   - FROM, TO, CC: the mailbox (local part, not decoded) of the first address, normalized; "" without one.
//   - DISPLAYFROM, DISPLAYTO: the first address's display name with encoded words decoded, or when that is
//     empty "mailbox@domain" (or the mailbox alone), normalized.
//   - DATE: the sent date (imapfmt.SentDate) as ten decimal digits, so that the strings compare as the
//     numbers do; "" when the message has no valid Date, which Dovecot then sorts by its internal date.
//
// ok is false for another key.
func SortKey(header []byte, key string) (s string, ok bool) {
	var field string
	switch key = strings.ToUpper(key); key {
	case "SUBJECT":
		field = "Subject"
	case "FROM", "DISPLAYFROM":
		field = "From"
	case "TO", "DISPLAYTO":
		field = "To"
	case "CC":
		field = "Cc"
	case "DATE":
		field = "Date"
	default:
		return "", false
	}
	var v []byte
	found := false
	imapfmt.SearchValues(header, field, imapfmt.HeaderPlain, func(b []byte) bool {
		v, found = b, true
		return false
	})
	if !found {
		return "", true
	}
	switch key {
	case "SUBJECT":
		return BaseSubject(string(v)), true
	case "DATE":
		if t, ok := imapfmt.SentDate(v); ok {
			return fmt.Sprintf("%010d", t), true
		}
		return "", true
	}
	name, mailbox, domain, ok := imapfmt.FirstAddress(v)
	if !ok {
		return "", true
	}
	var str string
	switch key {
	case "FROM", "TO", "CC":
		if mailbox != nil {
			str = *mailbox
		}
	default:
		if name != nil {
			str = cString(decodeHeaderDovecot([]byte(*name)))
		}
		if str == "" {
			switch {
			case mailbox != nil && domain != nil:
				str = *mailbox + "@" + *domain
			case mailbox != nil:
				str = *mailbox
			}
		}
	}
	return searchFold(cString(str)), true
}

// cString cuts s at its first NUL, as the C string Dovecot holds ends there.
func cString(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return s
}

// BaseSubject returns the base subject (RFC 5256 section 2.1) of a Subject field value (unfolded, encoded
// words not yet decoded) as Dovecot's imap_get_base_subject_cased computes it: (1) encoded words decoded to
// UTF-8 and normalized (searchFold: title case, decomposed, so "re:" is "RE:"), every run of SP, HTAB, CR and
// LF one SP; (2) trailing "(FWD)" and SP removed; (3) leaders removed: a leading SP, or any "[blob]"s followed
// by "RE", "FW" or "FWD", an optional SP, an optional "[blob]" and ":"; (4) a leading "[blob]" (and one SP
// after it) removed when text follows it; (5) (3) and (4) repeated; (6) "[FWD:" ... "]" unwrapped and all
// repeated from (2).
func BaseSubject(v string) string {
	s := searchFold(cString(decodeHeaderDovecot([]byte(v))))
	s = cString(s)
	// (1) pack white space.
	var b strings.Builder
	last := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\r', '\n':
			if !last {
				b.WriteByte(' ')
			}
			last = true
		default:
			b.WriteByte(c)
			last = false
		}
	}
	s = b.String()
	start := 0
	for {
		// (2) trailers.
		end := len(s)
		for end > start {
			if s[end-1] == ' ' {
				end--
			} else if end >= 5 && s[end-5:end] == "(FWD)" {
				end -= 5
			} else {
				break
			}
		}
		s = s[:max(end, start)]
		for {
			found := removeSubjLeader(s, &start)
			// (4) a blob when text follows it.
			if p := start; at(s, p) == '[' {
				if q, ok := removeBlob(s, p); ok && q < len(s) {
					start = q
					found = true
				}
			}
			if !found {
				break
			}
		}
		// (6) "[FWD:" subject "]".
		if !strings.HasPrefix(s[start:], "[FWD:") || s[len(s)-1] != ']' {
			return s[start:]
		}
		s = s[:len(s)-1]
		start += 5
	}
}

// at returns s[i], or 0 past the end (the C string's terminator).
func at(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}

// removeBlob skips "[" *BLOBCHAR "]" and one SP after it at s[p:]; ok is false when there is none.
func removeBlob(s string, p int) (int, bool) {
	if at(s, p) != '[' {
		return p, false
	}
	p++
	for c := at(s, p); c != 0 && c != '[' && c != ']'; c = at(s, p) {
		p++
	}
	if at(s, p) != ']' {
		return p, false
	}
	p++
	if at(s, p) == ' ' {
		p++
	}
	return p, true
}

// removeSubjLeader is step (3): a leading SP is always removed; "[blob]"s followed by "RE", "FWD" or "FW",
// an optional SP, an optional blob and ":" are removed together.
func removeSubjLeader(s string, start *int) bool {
	ret := false
	p := *start
	if at(s, p) == ' ' {
		p++
		*start = p
		ret = true
	}
	for at(s, p) == '[' {
		q, ok := removeBlob(s, p)
		if !ok {
			return ret
		}
		p = q
	}
	switch rest := s[min(p, len(s)):]; {
	case strings.HasPrefix(rest, "RE"):
		p += 2
	case strings.HasPrefix(rest, "FWD"):
		p += 3
	case strings.HasPrefix(rest, "FW"):
		p += 2
	default:
		return ret
	}
	if at(s, p) == ' ' {
		p++
	}
	if at(s, p) == '[' {
		q, ok := removeBlob(s, p)
		if !ok {
			return ret
		}
		p = q
	}
	if at(s, p) != ':' {
		return ret
	}
	*start = p + 1
	return true
}
