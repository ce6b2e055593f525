package smime

import (
	"bytes"
	"strings"
)

// The one definition of a status field: every part of the project that decides whether a header field is this
// proxy's own (removing forged ones, refusing or stripping them on APPEND, searching for them) asks the
// functions below.
//
// A header is read by internal/mimepart.EachField, the project's one header reader, as in RFC 5322 section 2.2:
// from the start of the message to the first empty line (LF or CRLF), every line of it, however many fields
// there are (no count limit, one linear pass). A line starting with a space or a tab continues the field before
// it (folding, section 2.2.3), except on the very first line, where it starts a field of its own (its leading
// white space is not part of the name). A field is a status field when
//
//   - its name (what precedes the first colon, or the whole line when there is none, without surrounding white
//     space and CRs) starts with StatusPrefix, "X-Smimeproxy-", in any case (RFC 5322 section 1.2.2); or
//   - a bare CR (one not followed by LF) inside it is followed, after optional spaces and tabs, by
//     StatusPrefix: some readers take a bare CR for a line end, and would see a field of that name there.
//
// Status fields are removed from every message the proxy rewrites (decrypted, undecryptable, or carrying a
// forged field; StripStatusHeaders, Process). The upstream server cannot be asked for this definition: the
// proxy finds plain messages that need the removal by searching for the exact names it writes itself
// (OwnedFields, with IMAP SEARCH HEADER <name> "", RFC 9051 section 6.4.4). A plain message whose only
// status-like field is a different X-Smimeproxy-* name, one hidden after a bare CR, or one on a first line that
// starts with white space (Dovecot keeps that white space in the name) is therefore not found that way and is
// relayed as stored (decrypt/verdict_test.go checks this against Dovecot).

// SignatureHeader is the name of the header field carrying the signature status of a served message
// (Signature.HeaderValue), which the proxy writes on top of signed messages.
const SignatureHeader = "X-Smimeproxy-Signature"

// OwnedFields returns the names of the header fields this proxy itself writes into served messages:
// StatusHeader first, then SignatureHeader. A plain message stored upstream with any of them was forged and is
// rewritten to remove it; the proxy searches the upstream server for exactly these names. The result is a fresh
// slice.
func OwnedFields() []string {
	return []string{StatusHeader, SignatureHeader, AppendHeader}
}

// AppendHeader is the header field the proxy writes into the outer header of a message it encrypted from a
// client's APPEND: a MAC that lets it serve the message back byte for byte as appended. Like every
// X-Smimeproxy-* field it is never served.
const AppendHeader = "X-Smimeproxy-Append"

// IsStatusFieldName reports whether name, a header field name without its colon, is a status field's:
// whether it starts with StatusPrefix, compared case-insensitively, after surrounding white space and CRs are
// removed.
func IsStatusFieldName(name string) bool {
	name = strings.Trim(name, " \t\r\n")
	return len(name) >= len(StatusPrefix) && strings.EqualFold(name[:len(StatusPrefix)], StatusPrefix)
}

// IsStatusField reports whether raw, one whole header field as received (its first line and any continuation
// lines, with or without line ends), is a status field by the definition above: by its name or by what
// follows a bare CR inside it.
func IsStatusField(raw []byte) bool {
	line := raw
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	if c := bytes.IndexByte(line, ':'); c >= 0 {
		line = line[:c]
	}
	return isStatusField(bytes.Trim(line, " \t\r\n"), raw)
}

// isStatusField is IsStatusField for a field whose name is already known (as eachField reports it).
func isStatusField(name, raw []byte) bool {
	if len(name) >= len(StatusPrefix) && strings.EqualFold(string(name[:len(StatusPrefix)]), StatusPrefix) {
		return true
	}
	for {
		i := bytes.IndexByte(raw, '\r')
		if i < 0 {
			return false
		}
		raw = raw[i+1:]
		if len(raw) > 0 && raw[0] == '\n' {
			continue // a line end, not a bare CR
		}
		rest := bytes.TrimLeft(raw, " \t")
		if len(rest) >= len(StatusPrefix) && strings.EqualFold(string(rest[:len(StatusPrefix)]), StatusPrefix) {
			return true
		}
	}
}

// HasStatusField reports whether the header at the start of msg (a whole message, a header, or the result of
// BODY.PEEK[HEADER.FIELDS (...)]) holds a status field (IsStatusField). It reads every field of the header
// once, in linear time.
func HasStatusField(msg []byte) bool {
	found := false
	eachField(msg, func(f field) {
		found = found || f.isStatus()
	})
	return found
}
