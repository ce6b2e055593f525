package decrypt

import (
	"bytes"
	"context"
	"encoding/base64"
	"mime"
	"net/mail"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// Large messages: what process does before handing a message to smime.Process, so that a large message is
// held once, decrypted in its own buffer when it can be, and never fetched twice because it could not.

// peekPrefix is how much of a base64 body holdsKeyFor decodes to find the recipients: enough for the
// RecipientInfos of a few hundred recipients.
const peekPrefix = 128 << 10

// holdsKeyFor reports whether msg is a top-level S/MIME message (RFC 8551 section 3.2) with a base64 body whose
// CMS recipients (read from the first peekPrefix bytes, cms.PeekRecipients) include one the user has a key
// for. Only then may smime.Process decode it in place (Options.Owned): when that fails the message must be
// fetched again. Every other message is decoded into a copy. A failing key store gives false (smime's own
// lookup, which the keyring answers from the same result, then reports it).
func (k *keyring) holdsKeyFor(ctx context.Context, msg []byte) bool {
	hdr, body := splitHeader(msg)
	if hdr == nil {
		return false
	}
	h, err := mail.ReadMessage(bytes.NewReader(hdr))
	if err != nil || !strings.EqualFold(strings.TrimSpace(h.Header.Get("Content-Transfer-Encoding")), "base64") {
		return false
	}
	mt, params, err := mime.ParseMediaType(h.Header.Get("Content-Type"))
	if err != nil || !smime.IsSMIMEType(mt, params) && mt != "application/pkcs7-mime" && mt != "application/x-pkcs7-mime" {
		return false
	}
	text := make([]byte, 0, min(len(body), peekPrefix))
	for _, c := range body[:min(len(body), peekPrefix)] {
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			text = append(text, c)
		}
	}
	text = text[:len(text)/4*4]
	der := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(der, text)
	if err != nil {
		return false
	}
	ids, err := cms.PeekRecipients(der[:n])
	if err != nil || len(ids) == 0 {
		return false
	}
	keys, err := k.KeysFor(ctx, ids)
	if err != nil {
		return false
	}
	for _, key := range keys {
		if key.Cert == nil || key.Private == nil {
			continue
		}
		for _, id := range ids {
			if id.Matches(key.Cert) {
				return true
			}
		}
	}
	return false
}

// splitHeader returns msg's header with the empty line that ends it, and the body; a nil header when there
// is no empty line.
func splitHeader(msg []byte) (hdr, body []byte) {
	if bytes.HasPrefix(msg, []byte("\r\n")) || bytes.HasPrefix(msg, []byte("\n")) {
		return nil, nil
	}
	i := bytes.Index(msg, []byte("\n\r\n"))
	j := bytes.Index(msg, []byte("\n\n"))
	switch {
	case i >= 0 && (j < 0 || i < j):
		return msg[:i+3], msg[i+3:]
	case j >= 0:
		return msg[:j+2], msg[j+2:]
	}
	return nil, nil
}

// processTooLarge is smime.Process for a message over the size limit, which is never decoded. Whether it is
// served as undecryptable (reason too-large) or as it is depends on its header alone (smime's rule, asked
// with the header only); the undecryptable copy, the status field and then msg, is built inside msg's buffer
// when the caller left room after it (the proxy's fetchRaw does), so the message is never held twice. Any
// other case is left to smime.Process.
func processTooLarge(ctx context.Context, msg []byte, kr smime.Keyring, opts *smime.Options) smime.Result {
	hdr, _ := splitHeader(msg)
	if hdr == nil {
		return smime.Process(ctx, msg, kr, opts)
	}
	probe := smime.Process(ctx, hdr, nil, &smime.Options{StatusParams: opts.StatusParams, MaxSize: 1})
	if probe.Status != smime.Undecryptable || probe.Reason != smime.ReasonTooLarge {
		return smime.Process(ctx, msg, kr, opts)
	}
	end := bytes.Index(probe.Served, []byte("\r\n"))
	rest := smime.StripStatusHeaders(msg)
	if end < 0 || len(rest) != len(msg) || cap(msg)-len(msg) < end+2 || opts.Explain { // a wrapper: one copy
		return smime.ServeUndecryptable(msg, smime.ReasonTooLarge, opts)
	}
	status := probe.Served[:end+2]
	n := len(msg)
	served := msg[:n+len(status)]
	copy(served[len(status):], served[:n])
	copy(served, status)
	return smime.Result{Served: served, Status: smime.Undecryptable, Reason: smime.ReasonTooLarge, Err: probe.Err}
}
