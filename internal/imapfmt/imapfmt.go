// Package imapfmt computes, from the raw bytes of an RFC 5322 message, the IMAP FETCH values ENVELOPE, BODY
// and BODYSTRUCTURE (RFC 3501 section 7.4.2, RFC 9051 section 7.5.2) exactly as Dovecot 2.3.19 sends them
// for the same message stored through IMAP APPEND, byte for byte, literals included.
//
// The proxy serves decrypted messages that the IMAP server never saw; clients must not be able to tell its
// answers from the server's, so the package reproduces Dovecot's parsers (lib-mail's header, address, MIME
// and RFC 2231 parsers, lib-imap's writers) decision for decision, including their treatment of malformed
// input. Nothing is decoded: encoded words (RFC 2047) and dates are sent as they appear in the header.
//
// The reference is the Dovecot the tests run against, Debian bookworm's 2.3.19.1+dfsg1-2.1+deb12u7, whose
// security updates changed some results of upstream 2.3.19; imapfmt follows those changes:
//   - a continuation line of a single white space character is unfolded without the line break before
//     it (which changes, for example, where an unterminated quoted string in an address ends);
//   - the line values of a header block keep at most 10 MB, those of all headers of a message 50 MB;
//   - at most 128 parameters, broken ones included, are parsed from one field;
//   - one message (its header and all parts together) yields at most 100,000 ENVELOPE addresses,
//     100,000 Content-Language tags and 200,000 parameters.
//
// A single text/plain us-ascii 7bit message without other Content-* data is written in Dovecot's fixed
// spelling ("text" "plain" ("charset" "us-ascii") ... "7bit"), whatever the case used in its header.
//
// # Line endings
//
// Dovecot stores an APPENDed message with LF line endings (its default mail_save_crlf=no turns CRLF into LF
// and keeps other CRs) and reports sizes counting every line ending as CRLF, so a message gives the same
// values whether it is passed with CRLF or LF line endings. The functions apply the same conversion first;
// mixed line endings and stray CRs are handled as Dovecot handles them after that conversion.
//
// # Known differences
//
// Where Dovecot fails an assertion and drops the connection (header lines of about 10 MB and more, an
// address group that takes the address count past the budget, some other messages with header blocks over
// 10 MB) the functions still return a value. When the value of an envelope field fills the 10 MB of a header
// block, Dovecot ignores the envelope fields after it and the functions send them empty. The
// address budget is shared between the message's own envelope and those of its message/rfc822 parts, as
// when Dovecot parses the message for ENVELOPE and BODYSTRUCTURE at once. Dovecot reads messages through an
// 8 KB buffer and splits longer header lines; a split that starts with the boundary of an enclosing multipart
// would end the header there, the functions read whole lines.
//
// # Cost
//
// The work is linear in the size of the message: the MIME parser is iterative, the part tree is at most
// 100 levels deep and holds at most 10,000 parts (as in Dovecot, a multipart or message/rfc822 part beyond
// that is a leaf, written as application/octet-stream), and each line starting with "--" is compared with at
// most 99 boundaries of at most 80 octets. Envelope reads only the header.
package imapfmt

import (
	"bytes"
	"strconv"
)

// Envelope returns the ENVELOPE value (RFC 3501 section 7.4.2 / RFC 9051 section 7.5.2) of msg, starting
// with "(". It may contain literals where Dovecot sends them.
func Envelope(msg []byte) []byte {
	d := storedForm(headerOf(msg))
	var size msgSize
	h := newHeaderParser(d, 0, &size, func(name []byte) bool {
		return isEnvelopeField(name) || isContentField(name)
	})
	var env envelope
	lim := newMailLimits()
	for l := h.next(); l != nil; l = h.next() {
		env.parseHeader(l, lim)
	}
	out := append(make([]byte, 0, 256), '(')
	return append(env.appendTo(out), ')')
}

// BodyStructure returns the BODYSTRUCTURE value (extended true) or the BODY value (extended false) of msg,
// starting with "(". It may contain literals where Dovecot sends them.
func BodyStructure(msg []byte, extended bool) []byte {
	root := parseMIME(storedForm(msg))
	out := make([]byte, 0, 256)
	if root.isPlain7bit() {
		// Dovecot caches this case as a flag when the message is saved and answers from the flag with a
		// fixed text (index_mail_get_plain_bodystructure), whatever the spelling in the header.
		out = append(out, `("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" `...)
		out = strconv.AppendInt(out, root.body.virtual, 10)
		out = append(out, ' ')
		out = strconv.AppendInt(out, root.body.lines, 10)
		if extended {
			out = append(out, " NIL NIL NIL NIL"...)
		}
		return append(out, ')')
	}
	out = append(out, '(')
	return append(root.appendBodyStructure(out, extended), ')')
}

// AppendString appends s to dst as an IMAP string (RFC 3501 section 4.3) the way Dovecot's
// imap_append_string does: a quoted string with \\ and \" escapes when s has no 8-bit octet, CR, LF or NUL
// and at most four characters to escape, otherwise a literal "{n}\r\n" followed by s. IMAP strings cannot
// carry NUL, so s should not contain any.
func AppendString(dst []byte, s []byte) []byte {
	escapes := 0
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			escapes++
			if escapes <= maxQuotedEscapes {
				continue
			}
		case c != '\r' && c != '\n' && c != 0 && c < 0x80:
			continue
		}
		return appendLiteral(dst, s)
	}
	dst = append(dst, '"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// AppendNString appends s to dst as an IMAP nstring: NIL for nil, else as AppendString.
func AppendNString(dst []byte, s []byte) []byte {
	if s == nil {
		return append(dst, "NIL"...)
	}
	return AppendString(dst, s)
}

// maxQuotedEscapes is how many '"' and '\' Dovecot escapes in a quoted string before it switches to a
// literal (imap-quote.c QUOTED_MAX_ESCAPE_CHARS).
const maxQuotedEscapes = 4

func appendLiteral(dst, s []byte) []byte {
	dst = append(dst, '{')
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, "}\r\n"...)
	return append(dst, s...)
}

// appendString appends s as AppendString does.
func appendString(dst []byte, s string) []byte { return AppendString(dst, []byte(s)) }

// appendNString appends s as an nstring, NIL for nil (Dovecot's imap_append_nstring).
func appendNString(dst []byte, s *string) []byte {
	if s == nil {
		return append(dst, "NIL"...)
	}
	return appendString(dst, *s)
}

// appendNStringNoLF appends s as an nstring after removing its CRs and LFs, putting a space where a line
// break was not followed by white space (Dovecot's imap_append_nstring_nolf, used for unfolded header values).
func appendNStringNoLF(dst []byte, s *string) []byte {
	if s == nil {
		return append(dst, "NIL"...)
	}
	v := *s
	if !bytesContainsCRLF(v) {
		return appendString(dst, v)
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\r' && c != '\n' {
			out = append(out, c)
			continue
		}
		if i+1 < len(v) {
			switch v[i+1] {
			case ' ', '\t', '\r', '\n', 0:
			default:
				out = append(out, ' ')
			}
		}
	}
	return AppendString(dst, out)
}

func bytesContainsCRLF(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return true
		}
	}
	return false
}

// appendStringForHumans appends a display text (a subject or an address's display name) as Dovecot's
// imap_append_string_for_humans: runs of white space and line breaks become one space, leading and trailing
// white space is dropped, NUL becomes 0x80; a text that needed any change, or has '"', '\' or 8-bit octets,
// is sent as a literal, and a text of only white space as "".
func appendStringForHumans(dst []byte, src string) []byte {
	removeCount := 0
	wsPrefix, lastLWSP, modify := true, true, false
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case 0:
			lastLWSP, modify = false, true
		case '\r', '\n', '\t', ' ':
			if c != ' ' {
				modify = true
			}
			if lastLWSP {
				modify = true
				removeCount++
			}
			lastLWSP = true
		case '"', '\\':
			modify, lastLWSP = true, false
		default:
			if c&0x80 != 0 {
				modify = true
			}
			lastLWSP = false
		}
		if !lastLWSP {
			wsPrefix = false
		}
	}
	if lastLWSP && len(src) > 0 && !wsPrefix {
		modify = true
		removeCount++
	}
	if !modify {
		dst = append(dst, '"')
		dst = append(dst, src...)
		return append(dst, '"')
	}
	if len(src) == removeCount {
		return append(dst, `""`...)
	}
	dst = append(dst, '{')
	dst = strconv.AppendInt(dst, int64(len(src)-removeCount), 10)
	dst = append(dst, "}\r\n"...)
	wsPrefix, lastLWSP = true, true
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case 0:
			dst = append(dst, 0x80)
			lastLWSP = false
		case '\r', '\n', '\t', ' ':
			if !lastLWSP {
				dst = append(dst, ' ')
			}
			lastLWSP = true
		default:
			dst = append(dst, c)
			lastLWSP = false
		}
		if !lastLWSP {
			wsPrefix = false
		}
	}
	if lastLWSP && len(src) > 0 && !wsPrefix {
		dst = dst[:len(dst)-1]
	}
	return dst
}

// headerOf returns the start of msg through the empty line that ends its header (RFC 5322 section 2.1): the
// first line that is empty, once stored and with a CR before its LF ignored.
func headerOf(msg []byte) []byte {
	for start := 0; ; {
		lf := bytes.IndexByte(msg[start:], '\n')
		if lf < 0 {
			return msg
		}
		if line := msg[start : start+lf]; len(line) <= 2 && len(bytes.Trim(line, "\r")) == 0 {
			return msg[:start+lf+1]
		}
		start += lf + 1
	}
}

// storedForm returns msg as Dovecot stores it when it is APPENDed: CRLF becomes LF, a CR before anything
// else is kept, and a CR at the very end is dropped (istream-crlf.c, i_stream_create_lf).
func storedForm(msg []byte) []byte {
	cr := bytes.IndexByte(msg, '\r')
	if cr < 0 {
		return msg
	}
	out := make([]byte, 0, len(msg))
	for cr >= 0 {
		out = append(out, msg[:cr]...)
		if cr+1 < len(msg) && msg[cr+1] != '\n' {
			out = append(out, '\r')
		}
		msg = msg[cr+1:]
		cr = bytes.IndexByte(msg, '\r')
	}
	return append(out, msg...)
}

// Structure is a parsed message, for questions about its parts without parsing again.
type Structure struct{ root *part }

// Parse parses msg's MIME structure the way Dovecot does (bounded depth and part count, linear time).
func Parse(msg []byte) *Structure { return &Structure{root: parseMIME(storedForm(msg))} }

// PartExists reports whether path (a section's part numbers, RFC 9051 section 6.4.5) names a body part, with
// Dovecot's numbering: a multipart's children are numbered from 1; a part that is not multipart has only
// part 1, itself, which may be followed by more numbers only when it is message/rfc822, whose numbering
// continues into the encapsulated message.
func (s *Structure) PartExists(path []int) bool {
	pt := s.root
	for i, n := range path {
		more := i+1 < len(path)
		if pt.flags&flagMultipart != 0 {
			if n < 1 || n > len(pt.children) {
				return false
			}
			pt = pt.children[n-1]
		} else if n != 1 || more && pt.flags&flagMessageRFC822 == 0 {
			return false
		}
		if more && pt.flags&flagMultipart == 0 && pt.flags&flagMessageRFC822 != 0 {
			if len(pt.children) == 0 {
				return false
			}
			pt = pt.children[0]
		}
	}
	return true
}
