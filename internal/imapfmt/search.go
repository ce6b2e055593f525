package imapfmt

import (
	"bytes"
	"math"
	"strings"
)

// This file gives the header field values that Dovecot's SEARCH matches a header key against (RFC 9051
// section 6.4.4: BCC, CC, FROM, TO, SUBJECT, HEADER), as index-search.c search_header_arg prepares them
// before message-search.c decodes encoded words and normalizes case, so the proxy can answer those keys over
// a served copy exactly as Dovecot would if it stored that copy.

// HeaderKind says how Dovecot reads a field's value for one kind of header search key
// (mail-search-register-imap.c).
type HeaderKind int

const (
	// HeaderPlain is HEADER <name>: the unfolded value as it is.
	HeaderPlain HeaderKind = iota
	// HeaderAddress is FROM, TO, CC and BCC: the value parsed as an address list (message_address_parse,
	// missing parts filled in) and written back by message_address_write, so that "FROM <alice" finds
	// "From: alice@example.org" and a display name is matched in its quoted form.
	HeaderAddress
	// HeaderCompressLWSP is SUBJECT: every run of SP and HTAB is one SP, and none is left at the start.
	HeaderCompressLWSP
)

// SearchValues calls f with the value of each field called name (compared as ASCII case-insensitive C
// strings) in the header at the start of msg, as Dovecot's search of kind matches it: the header read as
// message_parse_header_next does with MESSAGE_HEADER_PARSER_FLAG_CLEAN_ONELINE (lines end at LF, a CR before
// the LF dropped, the first SP or HTAB after the colon dropped, white space before the colon not part of the
// name, a line starting with SP or HTAB continues the field and is appended without its line break, its
// first HTAB as SP; the header ends at an empty line), then transformed by kind. Encoded words (RFC 2047) are
// not decoded here. f returns false to stop.
func SearchValues(msg []byte, name string, kind HeaderKind, f func(v []byte) bool) {
	pos := 0
	line := func() []byte {
		rest := msg[pos:]
		lf := bytes.IndexByte(rest, '\n')
		if lf < 0 {
			pos = len(msg)
			return rest
		}
		pos += lf + 1
		l := rest[:lf]
		if len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		return l
	}
	for pos < len(msg) {
		l := line()
		if len(l) == 0 {
			return // end of header
		}
		fieldName, value := []byte{}, l
		if colon := bytes.IndexByte(l, ':'); colon >= 0 {
			end := colon
			for end > 0 && isLWSP(l[end-1]) {
				end--
			}
			if end <= maxHeaderNameLen {
				fieldName, value = cstr(l[:end]), l[colon+1:]
				if len(value) > 0 && isLWSP(value[0]) {
					value = value[1:]
				}
			}
		}
		match := asciiEqualFold(fieldName, name)
		var full []byte
		if match {
			full = append(full, value...)
		}
		for pos < len(msg) && isLWSP(msg[pos]) {
			c := line()
			if match {
				if c[0] == '\t' {
					full = append(full, ' ')
					c = c[1:]
				}
				full = append(full, c...)
			}
		}
		if match && !f(searchForm(full, kind)) {
			return
		}
	}
}

func searchForm(v []byte, kind HeaderKind) []byte {
	switch kind {
	case HeaderAddress:
		return appendAddressText(nil, parseAddressList(v, math.MaxInt32))
	case HeaderCompressLWSP:
		out := make([]byte, 0, len(v))
		prevLWSP := true
		for _, c := range v {
			if isLWSP(c) {
				if !prevLWSP {
					out = append(out, ' ')
				}
				prevLWSP = true
				continue
			}
			prevLWSP = false
			out = append(out, c)
		}
		return out
	}
	return v
}

// appendAddressText writes an address list as Dovecot's message_address_write does: "name <mailbox@domain>"
// with the name and mailbox quoted when they are not atext (a name holding an encoded word is written as it
// is), "<mailbox@domain>" without a name, "<@route:mailbox@domain>" with a route, "group: members;".
func appendAddressText(out []byte, list []address) []byte {
	if len(list) == 0 {
		return out
	}
	if list[0].mailbox == nil && list[0].domain == nil {
		return append(out, "<>"...)
	}
	first, inGroup := true, false
	for _, a := range list {
		if first {
			first = false
		} else {
			out = append(out, ", "...)
		}
		if a.domain == nil {
			if !inGroup {
				switch {
				case a.mailbox == nil || *a.mailbox == "":
					out = append(out, `""`...)
				case strings.Contains(*a.mailbox, "=?"):
					out = append(out, *a.mailbox...)
				default:
					out = appendMaybeEscape(out, *a.mailbox, true)
				}
				out = append(out, ": "...)
				first = true
			} else {
				switch {
				case bytes.HasSuffix(out, []byte(", ")):
					out = out[:len(out)-2]
				case bytes.HasSuffix(out, []byte(": ")):
					out = out[:len(out)-1]
				}
				out = append(out, ';')
			}
			inGroup = !inGroup
			continue
		}
		mailbox := ""
		if a.mailbox != nil {
			mailbox = *a.mailbox
		}
		if a.name != nil {
			if strings.Contains(*a.name, "=?") {
				out = append(out, *a.name...)
			} else {
				out = appendMaybeEscape(out, *a.name, true)
			}
		}
		if a.route != nil || mailbox != "" || *a.domain != "" {
			if a.name != nil && *a.name != "" {
				out = append(out, ' ')
			}
			out = append(out, '<')
			if a.route != nil {
				out = append(out, *a.route...)
				out = append(out, ':')
			}
			if mailbox == "" {
				out = append(out, `""`...)
			} else {
				out = appendMaybeEscape(out, mailbox, false)
			}
			if *a.domain != "" {
				out = append(out, '@')
				out = append(out, *a.domain...)
			}
			out = append(out, '>')
		}
	}
	return out
}

// appendMaybeEscape is Dovecot's str_append_maybe_escape: s (a C string) as it is when every octet is atext
// (or a dot, unless escapeDot), else in double quotes with every double quote, backslash and apostrophe
// escaped by a backslash.
func appendMaybeEscape(out []byte, s string, escapeDot bool) []byte {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	plain := true
	for i := 0; i < len(s); i++ {
		if !isAtext(s[i]) && (escapeDot || s[i] != '.') {
			plain = false
			break
		}
	}
	if plain {
		return append(out, s...)
	}
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c == '\'' {
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return append(out, '"')
}
