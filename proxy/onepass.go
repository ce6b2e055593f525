package proxy

import (
	"context"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/smimeproxy/smimeproxy/backend"
)

// headerOnly reports whether every literal the FETCH asks for is small by nature — header sections only
// (BODY[HEADER], BODY[HEADER.FIELDS (...)], BODY[n.MIME], RFC822.HEADER; RFC 9051 section 6.4.5) and no
// BINARY — so that each upstream message can be held whole while the proxy decides about it. That is what
// clients send for header synchronisation, e.g. Thunderbird's
// UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject ...)]).
func headerOnly(o *imap.FetchOptions) bool {
	if len(o.BinarySection) > 0 || len(o.BinarySectionSize) > 0 {
		return false
	}
	for _, sec := range o.BodySection {
		if sec.Specifier != imap.PartSpecifierHeader && sec.Specifier != imap.PartSpecifierMIME {
			return false
		}
	}
	return true
}

// fetchRewritingOnePass is fetchRewriting for header-only requests: one upstream FETCH carries the client's
// items plus UID and BODYSTRUCTURE; each message is collected (small), plain ones are
// answered from what arrived, candidates are answered afterwards from Rewriter.Rewrite like in the two-pass
// path. This halves the upstream work of a header sync over plain mail.
func (s *session) fetchRewritingOnePass(ctx context.Context, up *backend.Conn, w *imapserver.FetchWriter, numSet imap.NumSet, o *imap.FetchOptions, forged func(imap.UID) bool) error {
	req := upstreamFetchOptions(o)
	req.UID = true
	req.BodyStructure = &imap.FetchItemBodyStructure{Extended: true}
	req.Flags = req.Flags || needsSeen(o)
	var cands []msgMeta
	err := up.Do(ctx, func() error {
		cmd := up.Client.Fetch(numSet, req)
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			buf, err := msg.Collect()
			if err != nil {
				cmd.Close()
				return err
			}
			if buf.UID != 0 && (forged(buf.UID) || buf.BodyStructure != nil && s.srv.opts.Rewriter.Candidate(buf.BodyStructure)) {
				cands = append(cands, msgMeta{seq: buf.SeqNum, uid: buf.UID, bs: buf.BodyStructure, flags: buf.Flags,
					date: imapclient.FetchItemDataInternalDate{Time: buf.InternalDate}, hasDt: o.InternalDate && !buf.InternalDate.IsZero()})
				continue
			}
			if err := s.writeCollected(w, buf, o); err != nil {
				cmd.Close()
				return err
			}
		}
		return cmd.Close()
	})
	if err != nil {
		return err
	}
	return s.rewriteInOrder(ctx, up, cands, func(m msgMeta, b []byte) error { return s.writeRewritten(ctx, up, w, m, o, b) })
}

// writeCollected answers one message of a header-only FETCH from its collected upstream response: only the
// items the client asked for, each under the client's own section pointer.
func (s *session) writeCollected(w *imapserver.FetchWriter, buf *imapclient.FetchMessageBuffer, o *imap.FetchOptions) error {
	rw := w.CreateMessage(buf.SeqNum)
	s.openMsg = rw
	if o.UID {
		rw.WriteUID(buf.UID)
	}
	if o.Flags && buf.Flags != nil {
		rw.WriteFlags(buf.Flags)
	}
	if o.InternalDate && !buf.InternalDate.IsZero() {
		rw.WriteInternalDate(buf.InternalDate)
	}
	if o.RFC822Size {
		rw.WriteRFC822Size(buf.RFC822Size)
	}
	if o.Envelope && buf.Envelope != nil {
		rw.WriteEnvelope(buf.Envelope)
	}
	if o.BodyStructure != nil && buf.BodyStructure != nil {
		rw.WriteBodyStructure(sanitizeBodyStructure(buf.BodyStructure))
	}
	for _, sec := range o.BodySection {
		b := buf.FindBodySection(sec)
		if err := writeLiteral(rw.WriteBodySection(sec, int64(len(b))), b); err != nil {
			s.openMsg = nil
			return err
		}
	}
	s.openMsg = nil
	return rw.Close()
}
