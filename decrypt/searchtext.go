package decrypt

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// searchText is what MatchText looks at in a served copy, lower-cased, as NUL-separated segments (a needle,
// an IMAP string, holds no NUL, so it never matches across two): body, what SEARCH BODY and SEARCH TEXT both
// see (the decoded text parts, and the header fields of attached messages), and header, what only SEARCH TEXT
// sees (the names and decoded values of the other header fields). It walks the message exactly as
// matchEntity does; TestSearchTextAgreesWithMatchText holds the two together.
type searchText struct {
	body, header []byte
	// over: the text is longer than maxStoredText (it is not stored, and no longer collected).
	over bool
}

func (t *searchText) add(dst *[]byte, s string) {
	if t.over = t.over || len(t.body)+len(t.header)+len(s) > maxStoredText; t.over {
		return
	}
	*dst = append(*dst, strings.ToLower(s)...)
	*dst = append(*dst, 0)
}

// addBytes is add of b, without copying it first when it is ASCII (as most text is); charset, when not "",
// is b's (decodeCharset converts it when b is not ASCII).
func (t *searchText) addBytes(dst *[]byte, b []byte, charset string) {
	if t.over = t.over || len(t.body)+len(t.header)+len(b) > maxStoredText; t.over {
		return
	}
	if !asciiFast(b) {
		if charset != "" {
			t.add(dst, decodeCharset(b, charset))
		} else {
			t.add(dst, string(b))
		}
		return
	}
	n := len(*dst)
	*dst = slices.Grow(*dst, len(b)+1)[:n+len(b)]
	out := (*dst)[n:]
	for i, c := range b {
		out[i] = lowerASCII[c]
	}
	*dst = append(*dst, 0)
}

// lowerASCII maps A-Z to a-z and every other byte to itself.
var lowerASCII = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
		if 'A' <= i && i <= 'Z' {
			t[i] = byte(i + 'a' - 'A')
		}
	}
	return t
}()

// asciiFast is isASCII eight bytes at a time.
func asciiFast(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return false
		}
		b = b[8:]
	}
	return isASCII(b)
}

// textOf returns the searchable text of served.
func textOf(served []byte) searchText {
	t := searchText{body: make([]byte, 0, min(len(served), maxStoredText)+64)}
	t.part(mimepart.Parse(served), false, 0)
	return t
}

// part collects one entity, walking it exactly as matchPart (search.go) does; inMessage: its header fields
// count for BODY too (an attached message's, which matchPart searches with headerToo forced).
func (t *searchText) part(p *mimepart.Part, inMessage bool, depth int) {
	if t.over || p == nil {
		return
	}
	dst := &t.header
	if inMessage {
		dst = &t.body
	}
	mimepart.EachField(p.Header, func(f mimepart.Field) {
		t.add(dst, string(f.Name))
		t.add(dst, decodeWords(f.Value()))
	})
	if depth >= maxMIMEDepth {
		return
	}
	switch {
	case p.Multipart:
		for _, c := range p.Parts {
			t.part(c, inMessage, depth+1)
		}
	case p.MediaType == "message/rfc822":
		m := p.Message
		if !mimepart.IsIdentity(p.Encoding) {
			b, err := p.Decoded()
			if err != nil {
				return
			}
			m = mimepart.Parse(b)
		}
		t.part(m, true, depth+1)
	case isPKCS7Type(p):
		der, err := p.Decoded()
		if err != nil {
			return
		}
		inner, err := cms.SignedContent(der)
		if err != nil {
			return
		}
		t.part(mimepart.Parse(inner), inMessage, depth+1)
	case strings.HasPrefix(p.MediaType, "text/"):
		b, err := p.Decoded()
		if err != nil {
			b = p.Body
		}
		t.addBytes(&t.body, b, p.Params["charset"])
	}
}

// match is MatchText over the collected text.
func (t searchText) match(needle string, headerToo bool) bool {
	n := []byte(strings.ToLower(needle))
	if len(n) == 0 {
		return true
	}
	return bytes.Contains(t.body, n) || headerToo && bytes.Contains(t.header, n)
}

// The searchable text of a served copy is kept in the metadata store beside its metadata, as an entry of its
// own (under the mailbox name textMailboxPrefix+name, which no IMAP mailbox name has: a header sync never
// reads it), when it is at most maxStoredText bytes:
//
//	version (1) | generation (8) | DEFLATE (RFC 1951) of: len(body) (4) | body | header
const (
	textMailboxPrefix = "\x00text\x00"
	maxStoredText     = 256 << 10
	textVersion       = 1
)

func (d *Decrypter) encodeText(t searchText) []byte {
	if t.over || len(t.body)+len(t.header) > maxStoredText {
		return nil
	}
	var b bytes.Buffer
	b.Grow(64 + (len(t.body)+len(t.header))/4)
	b.WriteByte(textVersion)
	b.Write(d.metaGen[:])
	w, _ := flateWriters.Get().(*flate.Writer)
	if w == nil {
		w, _ = flate.NewWriter(&b, flate.BestSpeed)
	} else {
		w.Reset(&b)
	}
	w.Write([]byte{byte(len(t.body) >> 24), byte(len(t.body) >> 16), byte(len(t.body) >> 8), byte(len(t.body))})
	w.Write(t.body)
	w.Write(t.header)
	w.Close()
	flateWriters.Put(w)
	return b.Bytes()
}

// flateWriters holds compressors for encodeText (making one costs more than compressing a message's text).
var flateWriters sync.Pool

func (d *Decrypter) decodeText(v []byte) (searchText, bool) {
	if len(v) < 9 || v[0] != textVersion || !bytes.Equal(v[1:9], d.metaGen[:]) {
		return searchText{}, false
	}
	raw, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(v[9:])), maxStoredText+5))
	if err != nil || len(raw) < 4 || len(raw) > maxStoredText+4 {
		return searchText{}, false
	}
	n := int(raw[0])<<24 | int(raw[1])<<16 | int(raw[2])<<8 | int(raw[3])
	if n > len(raw)-4 {
		return searchText{}, false
	}
	return searchText{body: raw[4 : 4+n], header: raw[4+n:]}, true
}

// MatchStoredText implements proxy.StoredTextMatcher from the metadata store: SEARCH BODY and TEXT over a
// served copy that is not at hand, without decrypting it again.
func (d *Decrypter) MatchStoredText(m MessageRef, needle string, headerToo bool) (match, ok bool) {
	if d.meta == nil {
		return false, false
	}
	v, ok := d.meta.Get(context.Background(), m.User, textMailboxPrefix+m.Mailbox, m.UIDValidity, m.UID)
	if !ok {
		return false, false
	}
	t, ok := d.decodeText(v)
	if !ok {
		return false, false
	}
	return t.match(needle, headerToo), true
}
