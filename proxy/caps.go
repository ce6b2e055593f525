package proxy

import (
	"bytes"
	"strings"
)

// Capabilities (RFC 9051 section 6.1.1) are relayed as the upstream server lists them, in its greeting,
// CAPABILITY responses and [CAPABILITY ...] response codes, minus those the relay cannot keep consistent:
//
//   - STARTTLS: the upstream's offer is about the proxy's own upstream connection, which backend secures.
//     Towards the client the relay offers STARTTLS itself when Options.StartTLS is set, on a plaintext
//     connection before login (starttls.go); it then stands where the upstream listed it (else before the
//     first AUTH=), so the list reads as the server's own. LOGINDISABLED is never added: plaintext LOGIN on
//     loopback keeps working. COMPRESS=*: the relay reads the stream and would have to inflate both sides.
//   - AUTH=mechanisms other than PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER: the proxy opens a second upstream
//     connection for the same user (to read ciphertext and classify messages without disturbing the client's
//     session) by replaying what the client sent, which a challenge-response mechanism (CRAM-MD5, SCRAM-*)
//     forbids.
//
// With decryption on, also the extensions that would show the client server-side views of ciphertext
// that the relay does not rewrite:
//
//   - PREVIEW (RFC 8970) and SNIPPET: previews computed by the server from ciphertext.
//   - URLAUTH, URL-PARTIAL, URLFETCH (RFC 4467, RFC 5524): address server-side sections, whose numbering
//     differs from the served copy's. CATENATE's URL parts copy ciphertext server-side and stay.
//
// NOTIFY (RFC 5465) stays: the FETCH responses it pushes for new messages of the selected mailbox are
// rewritten like any other (fetch.go; prepareNotify adds UID to MessageNew's fetch attributes).
//
// Everything else (CONDSTORE, QRESYNC, SORT, THREAD, ESEARCH, CONTEXT, MULTIAPPEND, CATENATE, ID, ENABLE,
// UTF8=ACCEPT, LIST-*, SPECIAL-USE, METADATA, QUOTA, ACL, BINARY, ...) passes; the relay rewrites what those
// responses carry of encrypted messages (fetch.go, search.go, append.go).
func keepCap(c string, decrypting bool) bool {
	u := strings.ToUpper(c)
	switch {
	case u == "STARTTLS", strings.HasPrefix(u, "COMPRESS="):
		return false
	case strings.HasPrefix(u, "AUTH="):
		return replayableMech(u[len("AUTH="):])
	}
	if !decrypting {
		return true
	}
	switch {
	case u == "PREVIEW", strings.HasPrefix(u, "PREVIEW="), strings.HasPrefix(u, "SNIPPET="),
		u == "URLAUTH", strings.HasPrefix(u, "URLAUTH="), u == "URL-PARTIAL", strings.HasPrefix(u, "URLFETCH"):
		return false
	}
	return true
}

// replayableMech reports whether a SASL mechanism's client responses do not depend on the server's
// challenges, so that the proxy can log in a second connection with them.
func replayableMech(m string) bool {
	switch strings.ToUpper(m) {
	case "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER":
		return true
	}
	return false
}

// filterCapList filters a space-separated capability list; with startTLS, STARTTLS is offered (in the
// upstream's place for it, else before the first AUTH=, else last).
func filterCapList(list []byte, decrypting, startTLS bool) []byte {
	var out []byte
	add := func(c []byte) {
		if len(out) > 0 {
			out = append(out, ' ')
		}
		out = append(out, c...)
	}
	for _, c := range bytes.Fields(list) {
		if startTLS && (bytes.EqualFold(c, []byte("STARTTLS")) || len(c) > 5 && bytes.EqualFold(c[:5], []byte("AUTH="))) {
			add([]byte("STARTTLS"))
			startTLS = false
			if bytes.EqualFold(c, []byte("STARTTLS")) {
				continue
			}
		}
		if keepCap(string(c), decrypting) {
			add(c)
		}
	}
	if startTLS {
		add([]byte("STARTTLS"))
	}
	return out
}

// filterCapsInLine rewrites the capability list of a line that carries one: "* CAPABILITY ..." or a
// "[CAPABILITY ...]" response code in a greeting or status response. Other lines come back unchanged (same
// slice). caps receives the unfiltered list, for the relay's own use (LITERAL+).
func filterCapsInLine(line []byte, decrypting bool, caps func(list []byte)) []byte {
	return filterCapsInLineTLS(line, decrypting, false, caps)
}

// filterCapsInLineTLS is filterCapsInLine, offering STARTTLS when startTLS is set.
func filterCapsInLineTLS(line []byte, decrypting, startTLS bool, caps func(list []byte)) []byte {
	if i := indexFold(line, "[CAPABILITY "); i >= 0 {
		start := i + len("[CAPABILITY ")
		end := bytes.IndexByte(line[start:], ']')
		if end < 0 {
			return line
		}
		end += start
		caps(line[start:end])
		out := append([]byte(nil), line[:start]...)
		out = append(out, filterCapList(line[start:end], decrypting, startTLS)...)
		return append(out, line[end:]...)
	}
	if len(line) > 13 && bytes.EqualFold(line[:13], []byte("* CAPABILITY ")) {
		body := trimEOL(line[13:])
		caps(body)
		out := append([]byte(nil), line[:13]...)
		out = append(out, filterCapList(body, decrypting, startTLS)...)
		return append(out, line[13+len(body):]...)
	}
	return line
}

// indexFold is bytes.Index, ASCII case-insensitive in sub (which must be upper case).
func indexFold(b []byte, sub string) int {
	n := len(sub)
	for i := 0; i+n <= len(b); i++ {
		if bytes.EqualFold(b[i:i+n], []byte(sub)) {
			return i
		}
	}
	return -1
}

// capSet is the upstream's capability list as the relay needs it.
type capSet struct {
	literalPlus, literalMinus bool
}

func parseCaps(list []byte) capSet {
	var cs capSet
	for _, c := range bytes.Fields(list) {
		switch strings.ToUpper(string(c)) {
		case "LITERAL+":
			cs.literalPlus = true
		case "LITERAL-":
			cs.literalMinus = true
		}
	}
	return cs
}
