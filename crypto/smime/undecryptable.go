package smime

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// What a client is served for a message that cannot be decrypted (Options.Explain).
//
// Without Explain the served copy is the original, as stored upstream, under the status field: a client then
// shows the message as it would without the proxy (Thunderbird: its own full-page "cannot decrypt" without the
// header pane; mutt: a prompt for a key), and the reason is only in the status field, which most clients do
// not show.
//
// With Explain the served copy is an explanation wrapper (RFC 2046 section 5.1.3 multipart/mixed):
//
//	X-Smimeproxy-Status: undecryptable; reason=<reason>[; params]
//	<the original's header fields, except Content-*, MIME-Version, status fields and malformed lines>
//	MIME-Version: 1.0
//	Content-Type: multipart/mixed; boundary="<boundary>"
//
//	--<boundary>
//	Content-Type: text/plain; charset=us-ascii      (the explanation: what happened, what to do)
//	...
//	--<boundary>
//	<the original message minus its status fields, byte for byte: its own header is the part's header>
//	--<boundary>--
//
// The second part is the whole original: its Content-* fields make it an application/pkcs7-mime (or
// multipart/signed) entity, which clients show as an attachment (smime.p7m); its other header fields (From,
// Subject, ...) are ignored in a body part (RFC 2045 section 9) and repeated on top, so the client's header
// pane, ENVELOPE and threading show the message as it is. The boundary is derived from the original's SHA-256
// and never occurs in it, so the wrapper is a deterministic function of the original, the reason and the status
// field's parameters, and OriginalOf can give the original back byte for byte when a client appends an
// unchanged wrapper (copying or moving it between accounts, or saving a draft).

// undecryptableBoundaryPrefix starts the boundary of every explanation wrapper.
const undecryptableBoundaryPrefix = "smimeproxy-undecryptable-"

// Explanation returns the text of the explanation part served for reason (one of the Reason* constants), with
// CRLF line ends: what the proxy could not do and what the user can do about it. It never holds anything of the
// message beyond the reason.
func Explanation(reason Reason) string {
	why, ok := explanations[reason]
	if !ok {
		why = "The proxy could not decrypt it."
	}
	return "smimeproxy could not decrypt this message (reason: " + string(reason) + ").\r\n\r\n" + why + "\r\n\r\n" +
		"The encrypted message, exactly as stored on the server, is attached (smime.p7m):\r\n" +
		"a program that holds the right private key can open it. The server copy is\r\n" +
		"unchanged.\r\n"
}

var explanations = map[Reason]string{
	ReasonNoMatchingKey: "None of your keys in the key store is a recipient of this message: it was\r\n" +
		"encrypted to a certificate whose private key smimeproxy does not have (an\r\n" +
		"old key of yours, or someone else's). Import that key (smimeproxy keys\r\n" +
		"import) and open the message again.",
	ReasonKeyUnavailable: "The key store (Vault) could not be reached, or refused the key, when the\r\n" +
		"message was opened. The message itself may be fine: open it again later.",
	ReasonCorrupt: "The encrypted content is damaged: its transfer encoding or its CMS\r\n" +
		"structure is invalid, or decrypting it with your matching key failed.",
	ReasonUnsupported: "It uses an encryption algorithm smimeproxy does not implement.",
	ReasonTooLarge: "It is larger than the largest message smimeproxy decrypts (64 MiB unless\r\n" +
		"configured otherwise).",
}

// explainUndecryptable is the explanation wrapper (above) of msg, whose status fields are removed first, under
// the status line status (with its CRLF).
func explainUndecryptable(msg []byte, reason Reason, status []byte) []byte {
	orig := StripStatusHeaders(msg)
	boundary := wrapperBoundary(orig)
	text := Explanation(reason)
	const partHeader = "Content-Type: text/plain; charset=us-ascii\r\n" +
		"Content-Transfer-Encoding: 7bit\r\n" +
		"Content-Disposition: inline\r\n\r\n"
	topCT := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"" + boundary + "\"\r\n\r\n"
	keep := func(f field) bool {
		return validOuterField(f) && !f.hasPrefix("Content-") && !f.is("MIME-Version") && !f.isStatus()
	}
	n := len(status) + len(topCT) + 2*(len(boundary)+4) + len(partHeader) + len(text) + len(orig) +
		len(boundary) + 8
	eachField(orig, func(f field) {
		if keep(f) {
			n += fieldLen(f.raw)
		}
	})
	out := make([]byte, 0, n)
	out = append(out, status...)
	eachField(orig, func(f field) {
		if keep(f) {
			out = appendField(out, f.raw)
		}
	})
	out = append(out, topCT...)
	out = append(append(append(out, "--"...), boundary...), "\r\n"...)
	out = append(append(out, partHeader...), text...)
	out = append(append(append(out, "\r\n--"...), boundary...), "\r\n"...)
	out = append(out, orig...)
	out = append(append(append(out, "\r\n--"...), boundary...), "--\r\n"...)
	return out
}

// wrapperBoundary derives the wrapper's boundary from orig: the prefix and 32 hex digits of its SHA-256, with a
// counter added in the (adversarial, practically impossible) case that orig holds that delimiter.
func wrapperBoundary(orig []byte) string {
	sum := sha256.Sum256(orig)
	return boundaryAvoiding(orig, undecryptableBoundaryPrefix+hex.EncodeToString(sum[:16]))
}

// boundaryAvoiding returns base, or base with the first counter suffix whose delimiter does not occur in orig.
func boundaryAvoiding(orig []byte, base string) string {
	b := base
	for i := 1; bytes.Contains(orig, []byte("--"+b)); i++ {
		b = base + "-" + strconv.Itoa(i)
	}
	return b
}

// OriginalOf returns the message a served copy stands for, for an APPEND of it: for an unmodified explanation
// wrapper (Options.Explain) the original it wraps, byte for byte; for anything else msg without its status
// fields (StripStatusHeaders), which for an undecryptable copy served without Explain is the original too. A
// wrapper counts as unmodified when msg minus its status fields is exactly the wrapper that its second part
// and the reason in its status field give: any edit (of the explanation, the header, the line ends) makes it
// an ordinary message, stored with its status fields removed. The result may alias msg.
func OriginalOf(msg []byte) []byte {
	stripped := StripStatusHeaders(msg)
	reason, ok := undecryptableReason(msg)
	if !ok {
		return stripped
	}
	top := parseEntity(stripped)
	mt, params := top.contentType()
	boundary := params["boundary"]
	if mt != "multipart/mixed" || !strings.HasPrefix(boundary, undecryptableBoundaryPrefix) {
		return stripped
	}
	parts := multipartParts(top.body, boundary, 2)
	if len(parts) != 2 {
		return stripped
	}
	orig := parts[1]
	if !bytes.Equal(explainUndecryptable(orig, reason, nil), stripped) {
		return stripped
	}
	return orig
}

// undecryptableReason returns the reason parameter of msg's status field when msg has exactly one and it says
// undecryptable.
func undecryptableReason(msg []byte) (Reason, bool) {
	var values []string
	eachField(msg, func(f field) {
		if f.is(StatusHeader) {
			values = append(values, f.value())
		}
	})
	if len(values) != 1 {
		return "", false
	}
	status, params, _ := strings.Cut(values[0], ";")
	if !strings.EqualFold(strings.TrimSpace(status), Undecryptable.String()) {
		return "", false
	}
	for _, p := range strings.Split(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "reason") {
			return Reason(strings.TrimSpace(v)), true
		}
	}
	return "", false
}
