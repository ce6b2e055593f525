package proxy

import (
	"fmt"
	"io"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/smimeproxy/smimeproxy/backend"
)

// Fetch serves FETCH and UID FETCH (RFC 9051 section 6.4.5). Without a Rewriter, or when no body-dependent item
// is asked for, it is a streaming relay (relayFetch). Otherwise fetchRewriting decides per message from its
// BODYSTRUCTURE (rewrite.go).
func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	s.cork.cork()
	defer s.cork.uncork()
	up, err := s.upstream()
	if err != nil {
		return err
	}
	if s.srv.opts.Rewriter != nil && bodyDependent(options) {
		return s.fetchRewriting(ctx, up, w, numSet, options)
	}
	return up.Do(ctx, func() error { return s.relayFetch(up, w, numSet, options) })
}

// bodyDependent reports whether options ask for an item computed from the message's bytes.
func bodyDependent(o *imap.FetchOptions) bool {
	return o.RFC822Size || o.Envelope || o.BodyStructure != nil || len(o.BodySection) > 0 ||
		len(o.BinarySection) > 0 || len(o.BinarySectionSize) > 0
}

// upstreamFetchOptions is the request sent upstream for the client's options: the same items, except that
// BINARY partials are fetched whole and cut here (imapclient cannot parse "BINARY[...]<n>" responses) and
// BODYSTRUCTURE is asked for when BODY is (one upstream item serves both, see imapserver.WriteBodyStructure).
func upstreamFetchOptions(o *imap.FetchOptions) *imap.FetchOptions {
	u := &imap.FetchOptions{
		UID: o.UID, Flags: o.Flags, InternalDate: o.InternalDate, RFC822Size: o.RFC822Size, Envelope: o.Envelope,
		BodySection: o.BodySection, BinarySectionSize: o.BinarySectionSize,
	}
	if o.BodyStructure != nil {
		u.BodyStructure = &imap.FetchItemBodyStructure{Extended: true}
	}
	seen := map[string]bool{}
	for _, b := range o.BinarySection {
		key := fmt.Sprint(b.Part, b.Peek)
		if seen[key] {
			continue
		}
		seen[key] = true
		u.BinarySection = append(u.BinarySection, &imap.FetchItemBinarySection{Part: b.Part, Peek: b.Peek})
	}
	return u
}

// relayFetch streams the upstream's FETCH responses to the client: literals are copied as they arrive, never
// held whole (a 50 MB message costs a copy buffer, not 50 MB). Each response item is written back with the
// client's own section pointer, so RFC822/RFC822.TEXT/RFC822.HEADER answers keep their names.
func (s *session) relayFetch(up *backend.Conn, w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	cmd := up.Client.Fetch(numSet, upstreamFetchOptions(options))
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		if err := s.relayMessage(w, msg, options); err != nil {
			cmd.Close()
			return err
		}
	}
	return cmd.Close()
}

func (s *session) relayMessage(w *imapserver.FetchWriter, msg *imapclient.FetchMessageData, o *imap.FetchOptions) error {
	rw := w.CreateMessage(msg.SeqNum)
	s.openMsg = rw
	var usedBody, usedBin, usedBinSize uint64 // bit i: the client's item i was answered
	for item := msg.Next(); item != nil; item = msg.Next() {
		switch item := item.(type) {
		case imapclient.FetchItemDataUID:
			if o.UID {
				rw.WriteUID(item.UID)
			}
		case imapclient.FetchItemDataFlags:
			rw.WriteFlags(item.Flags)
		case imapclient.FetchItemDataInternalDate:
			if o.InternalDate {
				rw.WriteInternalDate(item.Time)
			}
		case imapclient.FetchItemDataRFC822Size:
			if o.RFC822Size {
				rw.WriteRFC822Size(item.Size)
			}
		case imapclient.FetchItemDataEnvelope:
			if o.Envelope {
				rw.WriteEnvelope(item.Envelope)
			}
		case imapclient.FetchItemDataBodyStructure:
			if o.BodyStructure != nil {
				rw.WriteBodyStructure(sanitizeBodyStructure(item.BodyStructure))
			}
		case imapclient.FetchItemDataBodySection:
			var secs []*imap.FetchItemBodySection
			for i, sec := range o.BodySection {
				if i < 64 && usedBody&(1<<i) == 0 && item.MatchCommand(sec) {
					usedBody |= 1 << i
					secs = append(secs, sec)
				}
			}
			if err := s.relayLiteral(rw, item.Literal, len(secs), func(i int, size int64) io.WriteCloser {
				return rw.WriteBodySection(secs[i], size)
			}, nil); err != nil {
				return err
			}
		case imapclient.FetchItemDataBinarySection:
			var secs []*imap.FetchItemBinarySection
			for i, sec := range o.BinarySection {
				if i < 64 && usedBin&(1<<i) == 0 && item.MatchCommand(sec) {
					usedBin |= 1 << i
					secs = append(secs, sec)
				}
			}
			if err := s.relayLiteral(rw, item.Literal, len(secs), func(i int, size int64) io.WriteCloser {
				return rw.WriteBinarySection(secs[i], size)
			}, func(i int) *imap.SectionPartial { return secs[i].Partial }); err != nil {
				return err
			}
		case imapclient.FetchItemDataBinarySectionSize:
			for i, sec := range o.BinarySectionSize {
				if i < 64 && usedBinSize&(1<<i) == 0 && intsEqual(sec.Part, item.Part) {
					usedBinSize |= 1 << i
					rw.WriteBinarySectionSize(sec, item.Size)
					break
				}
			}
		}
	}
	s.openMsg = nil
	return rw.Close()
}

// relayLiteral writes one upstream literal as n client items. One item streams (cut to its partial window, if
// any); several items answered by the same upstream literal (e.g. BINARY[1] and BINARY[1]<0.10>) are served
// from a copy in memory. A nil literal (NIL) is served as an empty literal.
func (s *session) relayLiteral(rw *imapserver.FetchResponseWriter, lit imap.LiteralReader, n int,
	open func(i int, size int64) io.WriteCloser, partial func(i int) *imap.SectionPartial) error {
	var size int64
	var r io.Reader = eofReader{}
	if lit != nil {
		size, r = lit.Size(), lit
	}
	if n == 0 {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	if n == 1 {
		var p *imap.SectionPartial
		if partial != nil {
			p = partial(0)
		}
		off, cnt := window(size, p)
		if off > 0 {
			if _, err := io.CopyN(io.Discard, r, off); err != nil {
				return s.brokenLiteral(err)
			}
		}
		wc := open(0, cnt)
		buf := copyBufs.Get().(*[]byte)
		written, err := io.CopyBuffer(wc, io.LimitReader(r, cnt), *buf)
		copyBufs.Put(buf)
		if err == nil && written < cnt {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			wc.Close()
			return s.brokenLiteral(err)
		}
		if err := wc.Close(); err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, r)
		return err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return s.brokenLiteral(err)
	}
	for i := 0; i < n; i++ {
		var p *imap.SectionPartial
		if partial != nil {
			p = partial(i)
		}
		off, cnt := window(int64(len(b)), p)
		wc := open(i, cnt)
		if _, err := wc.Write(b[off : off+cnt]); err != nil {
			wc.Close()
			return err
		}
		if err := wc.Close(); err != nil {
			return err
		}
	}
	return nil
}

// brokenLiteral handles a literal cut short by the upstream: the client's response cannot be completed, so
// the client gets BYE (RFC 9051 section 7.1.5) and the command fails.
func (s *session) brokenLiteral(err error) error {
	if s.openMsg != nil {
		_ = s.openMsg.Close()
		s.openMsg = nil
	}
	s.bye("Upstream server connection lost")
	return fmt.Errorf("proxy: relaying literal: %w", err)
}

// window returns the byte range of a partial fetch (RFC 9051 section 6.4.5, "<origin.octets>"): an origin past
// the end gives an empty result.
func window(size int64, p *imap.SectionPartial) (off, n int64) {
	if p == nil {
		return 0, size
	}
	off = min(p.Offset, size)
	n = size - off
	if p.Size >= 0 && p.Size < n {
		n = p.Size
	}
	return off, n
}

// copyBufs holds the buffers literals are streamed through: large enough to move a socket's worth per call.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func intsEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sanitizeBodyStructure makes a BODYSTRUCTURE safe for imapserver's writer: extension data present (the
// writer panics without it when BODYSTRUCTURE was asked for) and no 0-part multipart (RFC 9051 section 9
// body-type-mpart needs at least one part; an empty text/plain part stands in).
func sanitizeBodyStructure(bs imap.BodyStructure) imap.BodyStructure {
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		if bs.Extended == nil {
			bs.Extended = &imap.BodyStructureSinglePartExt{}
		}
		if bs.MessageRFC822 != nil && bs.MessageRFC822.BodyStructure != nil {
			bs.MessageRFC822.BodyStructure = sanitizeBodyStructure(bs.MessageRFC822.BodyStructure)
		}
		return bs
	case *imap.BodyStructureMultiPart:
		if bs.Extended == nil {
			bs.Extended = &imap.BodyStructureMultiPartExt{}
		}
		if len(bs.Children) == 0 {
			bs.Children = []imap.BodyStructure{&imap.BodyStructureSinglePart{
				Type: "text", Subtype: "plain", Params: map[string]string{"charset": "us-ascii"}, Encoding: "7bit",
				Text: &imap.BodyStructureText{}, Extended: &imap.BodyStructureSinglePartExt{},
			}}
		}
		for i, c := range bs.Children {
			bs.Children[i] = sanitizeBodyStructure(c)
		}
		return bs
	}
	// nil or unknown: an empty text/plain part.
	return &imap.BodyStructureSinglePart{Type: "text", Subtype: "plain", Params: map[string]string{"charset": "us-ascii"},
		Encoding: "7bit", Text: &imap.BodyStructureText{}, Extended: &imap.BodyStructureSinglePartExt{}}
}
