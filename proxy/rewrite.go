package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"mime/quotedprintable"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"github.com/smimeproxy/smimeproxy/backend"
)

// Rewriter decides which messages are served rewritten (decrypted) instead of relayed.
//
// The proxy calls Candidate for every message of a FETCH that asks for a body-dependent item (RFC822.SIZE,
// ENVELOPE, BODY, BODYSTRUCTURE, BODY[...], BINARY[...], BINARY.SIZE[...], RFC822, RFC822.HEADER, RFC822.TEXT)
// and Rewrite for each candidate; every such item of a candidate is then computed from the rewritten bytes, so
// that RFC822.SIZE equals the length of BODY[], partial fetches are windows of it, and BODYSTRUCTURE and
// ENVELOPE describe it. Implementations must be safe for concurrent use (one proxy serves many sessions).
type Rewriter interface {
	// Candidate reports from a message's BODYSTRUCTURE whether it may need rewriting (cheap, no I/O).
	Candidate(bs imap.BodyStructure) bool
	// Rewrite returns the bytes to serve for the message (user, mailbox, UIDVALIDITY, UID identify it;
	// raw returns the upstream bytes BODY.PEEK[], each call in a fresh buffer that the Rewriter owns and may
	// overwrite). It must not fail: undecryptable messages come back with a status header. Implementations
	// cache.
	Rewrite(ctx context.Context, m MessageRef, raw func() ([]byte, error)) ([]byte, error)
}

// MessageRef names one message of one user's mailbox on the upstream server. UIDValidity and UID are the
// upstream's (RFC 9051 section 2.3.1.1), so a (User, Mailbox, UIDValidity, UID) tuple never names two
// different messages.
type MessageRef struct {
	User, Mailbox    string
	UIDValidity, UID uint32
}

// msgMeta is what the first pass of a rewriting FETCH learns about a message.
type msgMeta struct {
	seq   uint32
	uid   imap.UID
	bs    imap.BodyStructure
	flags []imap.Flag
	date  imapclient.FetchItemDataInternalDate
	hasDt bool
}

// fetchRewriting serves a FETCH with body-dependent items when a Rewriter is set. Messages that carry a status
// field (HeaderGuard, known from forgedPredicate's searches) are rewritten whatever their structure, so the field
// is stripped. Pass 1 fetches UID and BODYSTRUCTURE (and FLAGS, INTERNALDATE when needed) upstream and asks
// Rewriter.Candidate; non-candidates are
// then relayed untouched (relayFetch, by UID); candidates are answered from Rewriter.Rewrite's bytes
// (writeRewritten).
func (s *session) fetchRewriting(ctx context.Context, up *backend.Conn, w *imapserver.FetchWriter, numSet imap.NumSet, o *imap.FetchOptions) error {
	var metas []msgMeta
	forged := func(imap.UID) bool { return false }
	if hg, ok := s.srv.opts.Rewriter.(HeaderGuard); ok {
		var err error
		if forged, err = s.forgedPredicate(ctx, hg); err != nil {
			return err
		}
	}
	if headerOnly(o) {
		return s.fetchRewritingOnePass(ctx, up, w, numSet, o, forged)
	}
	err := up.Do(ctx, func() error {
		pass1 := &imap.FetchOptions{UID: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
			Flags: o.Flags || needsSeen(o), InternalDate: o.InternalDate}
		cmd := up.Client.Fetch(numSet, pass1)
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			m := msgMeta{seq: msg.SeqNum}
			for item := msg.Next(); item != nil; item = msg.Next() {
				switch item := item.(type) {
				case imapclient.FetchItemDataUID:
					m.uid = item.UID
				case imapclient.FetchItemDataBodyStructure:
					m.bs = item.BodyStructure
				case imapclient.FetchItemDataFlags:
					m.flags = item.Flags
				case imapclient.FetchItemDataInternalDate:
					m.date, m.hasDt = item, true
				}
			}
			metas = append(metas, m)
		}
		return cmd.Close()
	})
	if err != nil {
		return err
	}
	var plain imap.UIDSet
	var cands []msgMeta
	for _, m := range metas {
		if m.uid != 0 && (forged(m.uid) || m.bs != nil && s.srv.opts.Rewriter.Candidate(m.bs)) {
			cands = append(cands, m)
		} else if m.uid != 0 {
			plain.AddNum(m.uid)
		}
	}
	if len(cands) == 0 {
		return up.Do(ctx, func() error { return s.relayFetch(up, w, numSet, o) })
	}
	if len(plain) > 0 {
		if err := up.Do(ctx, func() error { return s.relayFetch(up, w, plain, o) }); err != nil {
			return err
		}
	}
	return s.rewriteInOrder(ctx, up, cands, func(m msgMeta, b []byte) error { return s.writeRewritten(ctx, up, w, m, o, b) })
}

// needsSeen reports whether the FETCH sets \Seen (RFC 9051 section 6.4.5: BODY[...] and BINARY[...] without
// .PEEK, RFC822, RFC822.TEXT).
func needsSeen(o *imap.FetchOptions) bool {
	for _, b := range o.BodySection {
		if !b.Peek {
			return true
		}
	}
	for _, b := range o.BinarySection {
		if !b.Peek {
			return true
		}
	}
	return false
}

// ref names uid of the selected mailbox for the Rewriter.
func (s *session) ref(uid imap.UID) MessageRef {
	return MessageRef{User: s.user, Mailbox: s.mailbox, UIDValidity: s.uidValidity, UID: uint32(uid)}
}

// rawFetcher returns the function that reads uid's upstream bytes (BODY.PEEK[], so \Seen is not set) for
// Rewriter.Rewrite; it is called only on a cache miss.
func (s *session) rawFetcher(ctx context.Context, up *backend.Conn, uid imap.UID) func() ([]byte, error) {
	return func() ([]byte, error) {
		s.upMu.Lock()
		defer s.upMu.Unlock()
		var b []byte
		err := up.Do(ctx, func() error {
			// Read the literal into a buffer of its announced size: no growth, no garbage of the message's
			// size (a 50 MB message costs 50 MB here, not ~100 MB).
			sec := &imap.FetchItemBodySection{Peek: true}
			cmd := up.Client.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}})
			found := 0
			for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
				found++
				for item := msg.Next(); item != nil; item = msg.Next() {
					bs, ok := item.(imapclient.FetchItemDataBodySection)
					if !ok || bs.Literal == nil || b != nil {
						continue
					}
					buf := make([]byte, bs.Literal.Size())
					if _, err := io.ReadFull(bs.Literal, buf); err != nil {
						cmd.Close()
						return fmt.Errorf("proxy: reading UID %d: %w", uid, err)
					}
					b = buf
				}
			}
			if err := cmd.Close(); err != nil {
				return err
			}
			if found != 1 || b == nil {
				return fmt.Errorf("proxy: upstream returned %d messages (body: %v) for UID %d", found, b != nil, uid)
			}
			return nil
		})
		return b, err
	}
}

// writeRewritten answers one candidate message from the Rewriter's bytes.
func (s *session) writeRewritten(ctx context.Context, up *backend.Conn, w *imapserver.FetchWriter, m msgMeta, o *imap.FetchOptions, b []byte) error {
	flags := m.flags
	if needsSeen(o) && !s.readOnly && !slices.Contains(flags, imap.FlagSeen) {
		// The served bytes are not the upstream's, so the upstream is told about the read explicitly.
		s.upMu.Lock()
		err := up.Do(ctx, func() error {
			return up.Client.Store(imap.UIDSetNum(m.uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close()
		})
		s.upMu.Unlock()
		if err != nil {
			return err
		}
		flags = append(slices.Clip(flags), imap.FlagSeen)
		up.TakeUpdates(false) // our own change, if echoed
	} else if !o.Flags {
		flags = nil
	}

	rw := w.CreateMessage(m.seq)
	s.openMsg = rw
	if o.UID {
		rw.WriteUID(m.uid)
	}
	if flags != nil {
		rw.WriteFlags(flags)
	}
	if o.InternalDate && m.hasDt {
		rw.WriteInternalDate(m.date.Time)
	}
	if o.RFC822Size {
		rw.WriteRFC822Size(int64(len(b)))
	}
	derive := func(name string, compute func() any) any { return compute() }
	if dc, ok := s.srv.opts.Rewriter.(DerivedCache); ok {
		ref := s.ref(m.uid)
		derive = func(name string, compute func() any) any { return dc.Derived(ref, b, name, compute) }
	}
	if o.Envelope {
		env := derive("envelope", func() any {
			h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				h = textproto.Header{}
			}
			return imapserver.ExtractEnvelope(h)
		}).(*imap.Envelope)
		rw.WriteEnvelope(env)
	}
	var structure imap.BodyStructure
	bs := func() imap.BodyStructure {
		if structure == nil {
			structure = derive("bodystructure", func() any {
				return sanitizeBodyStructure(imapserver.ExtractBodyStructure(bytes.NewReader(b)))
			}).(imap.BodyStructure)
		}
		return structure
	}
	if o.BodyStructure != nil {
		rw.WriteBodyStructure(bs())
	}
	for _, sec := range o.BodySection {
		data := bodySection(b, bs, sec)
		off, n := window(int64(len(data)), sec.Partial)
		if err := writeLiteral(rw.WriteBodySection(sec, n), data[off:off+n]); err != nil {
			return err
		}
	}
	for _, sec := range o.BinarySection {
		data, err := binarySection(b, bs, sec.Part)
		if err != nil {
			s.openMsg = nil
			rw.Close()
			return err
		}
		off, n := window(int64(len(data)), sec.Partial)
		if err := writeLiteral(rw.WriteBinarySection(sec, n), data[off:off+n]); err != nil {
			return err
		}
	}
	for _, sec := range o.BinarySectionSize {
		data, err := binarySection(b, bs, sec.Part)
		if err != nil {
			s.openMsg = nil
			rw.Close()
			return err
		}
		rw.WriteBinarySectionSize(sec, uint32(len(data)))
	}
	s.openMsg = nil
	return rw.Close()
}

func writeLiteral(wc io.WriteCloser, b []byte) error {
	if _, err := wc.Write(b); err != nil {
		wc.Close()
		return err
	}
	return wc.Close()
}

// errUnknownCTE is the NO of RFC 3516 section 4.3 for a part whose transfer encoding cannot be undone.
var errUnknownCTE = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnknownCTE, Text: "Unknown Content-Transfer-Encoding"}

func decodeCTE(hdr, body []byte) ([]byte, error) {
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(hdr)))
	if err != nil {
		h = textproto.Header{}
	}
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	switch cte {
	case "", "7bit", "8bit", "binary":
		return body, nil
	case "base64":
		clean := make([]byte, 0, len(body))
		for _, c := range body {
			if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
				clean = append(clean, c)
			}
		}
		clean = bytes.TrimRight(clean, "=")
		out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
		n, err := base64.RawStdEncoding.Decode(out, clean)
		if err != nil {
			return nil, errUnknownCTE
		}
		return out[:n], nil
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if err != nil {
			return nil, errUnknownCTE
		}
		return out, nil
	}
	return nil, errUnknownCTE
}
