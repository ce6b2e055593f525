package decrypt

import (
	"bytes"
	"context"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
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
	if !mimepart.HeaderComplete(msg) {
		return false
	}
	hdr, body := mimepart.Split(msg)
	if mimepart.NormalizeEncoding(mimepart.Get(hdr, "Content-Transfer-Encoding")) != "base64" {
		return false
	}
	mt, params := mimepart.MediaType(mimepart.Get(hdr, "Content-Type"), "")
	if !smime.IsSMIMEType(mt, params) && mt != "application/pkcs7-mime" && mt != "application/x-pkcs7-mime" {
		return false
	}
	der := make([]byte, peekPrefix/4*3)
	n, _ := mimepart.DecodeBase64Prefix(der, body[:min(len(body), peekPrefix)])
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

// processTooLarge is smime.Process for a message over the size limit, which is never decoded. Whether it is
// served as undecryptable (reason too-large) or as it is depends on its header alone (smime's rule, asked
// with the header only); the undecryptable copy, the status field and then msg, is built inside msg's buffer
// when the caller left room after it (the proxy's fetchRaw does), so the message is never held twice. Any
// other case is left to smime.Process.
func processTooLarge(ctx context.Context, msg []byte, kr smime.Keyring, opts *smime.Options) smime.Result {
	hdr, _ := mimepart.SplitBlock(msg)
	if !mimepart.HeaderComplete(msg) || len(hdr) <= 2 {
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
