package proxy_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// wrapRewriter is a test Rewriter: small text/plain messages are served as a multipart/mixed whose only part is
// the original text prefixed with "[rewritten] ", base64-encoded. It records the refs it saw.
type wrapRewriter struct {
	mu   sync.Mutex
	refs []proxy.MessageRef
}

func (w *wrapRewriter) Candidate(bs imap.BodyStructure) bool {
	sp, ok := bs.(*imap.BodyStructureSinglePart)
	return ok && sp.MediaType() == "text/plain" && sp.Size < 1000
}

func (w *wrapRewriter) Rewrite(ctx context.Context, m proxy.MessageRef, raw func() ([]byte, error)) ([]byte, error) {
	w.mu.Lock()
	w.refs = append(w.refs, m)
	w.mu.Unlock()
	b, err := raw()
	if err != nil {
		return nil, err
	}
	return wrap(b), nil
}

func wrap(b []byte) []byte {
	hdr, body, _ := bytes.Cut(b, []byte("\r\n\r\n"))
	var out bytes.Buffer
	for _, l := range strings.Split(string(hdr), "\r\n") {
		ll := strings.ToLower(l)
		if strings.HasPrefix(ll, "content-type:") || strings.HasPrefix(ll, "content-transfer-encoding:") || strings.HasPrefix(ll, "mime-version:") {
			continue
		}
		out.WriteString(l + "\r\n")
	}
	out.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"rw\"\r\n\r\n--rw\r\n")
	out.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	out.WriteString(base64.StdEncoding.EncodeToString(append([]byte("[rewritten] "), body...)) + "\r\n--rw--\r\n")
	return out.Bytes()
}

// TestRewriterHook proves the FETCH path for decryption: candidates are answered consistently from the
// rewritten bytes (SIZE == len(BODY[]), partials concatenate to BODY[], BODYSTRUCTURE, sections, BINARY and
// ENVELOPE describe them), non-candidates are relayed byte for byte, and a non-PEEK fetch sets \Seen upstream.
func TestRewriterHook(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	seed(t, d, "alice")
	rw := &wrapRewriter{}
	addr, _ := startProxy(t, d, rw)
	c := dial(t, addr, "alice", "alice-pw", nil)
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	candidates := map[imap.UID]bool{1: true, 3: true, 5: true, 6: true, 7: true, 8: true} // 2 multipart, 4 large

	whole := &imap.FetchItemBodySection{Peek: true}
	opts := &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true, Envelope: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection: []*imap.FetchItemBodySection{whole,
			{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}},
			{Peek: true, Specifier: imap.PartSpecifierText},
			{Peek: true, Part: []int{1}},
			{Peek: true, Part: []int{1}, Specifier: imap.PartSpecifierMIME},
			{Peek: true, Partial: &imap.SectionPartial{Offset: 1 << 30, Size: 10}},
		},
		BinarySection:     []*imap.FetchItemBinarySection{{Peek: true, Part: []int{1}}},
		BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{1}}},
	}
	msgs, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, opts).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 8 {
		t.Fatalf("%d messages, want 8", len(msgs))
	}
	for _, m := range msgs {
		raw := d.Raw("alice", "INBOX", m.UID)
		body := m.FindBodySection(whole)
		if int64(len(body)) != m.RFC822Size {
			t.Errorf("UID %d: RFC822.SIZE %d != len(BODY[]) %d", m.UID, m.RFC822Size, len(body))
		}
		if !candidates[m.UID] {
			if !bytes.Equal(body, raw) {
				t.Errorf("UID %d (not a candidate) changed", m.UID)
			}
			continue
		}
		want := wrap(raw)
		if !bytes.Equal(body, want) {
			t.Errorf("UID %d: BODY[] = %q, want %q", m.UID, body, want)
			continue
		}
		mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
		if !ok || mp.MediaType() != "multipart/mixed" || len(mp.Children) != 1 {
			t.Errorf("UID %d: BODYSTRUCTURE %#v, want multipart/mixed with one part", m.UID, m.BodyStructure)
			continue
		}
		part1 := m.FindBodySection(&imap.FetchItemBodySection{Part: []int{1}})
		child := mp.Children[0].(*imap.BodyStructureSinglePart)
		if child.MediaType() != "text/plain" || !strings.EqualFold(child.Encoding, "base64") || int(child.Size) != len(part1) {
			t.Errorf("UID %d: part 1 %s %s size %d, BODY[1] is %d bytes", m.UID, child.MediaType(), child.Encoding, child.Size, len(part1))
		}
		_, origBody, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
		bin := m.FindBinarySection(&imap.FetchItemBinarySection{Part: []int{1}})
		if wantBin := append([]byte("[rewritten] "), origBody...); !bytes.Equal(bin, wantBin) {
			t.Errorf("UID %d: BINARY[1] = %q, want %q", m.UID, bin, wantBin)
		}
		if n, ok := m.FindBinarySectionSize([]int{1}); !ok || int(n) != len(bin) {
			t.Errorf("UID %d: BINARY.SIZE[1] = %d, want %d", m.UID, n, len(bin))
		}
		if mime := m.FindBodySection(&imap.FetchItemBodySection{Part: []int{1}, Specifier: imap.PartSpecifierMIME}); !bytes.Contains(mime, []byte("Content-Transfer-Encoding: base64")) {
			t.Errorf("UID %d: BODY[1.MIME] = %q", m.UID, mime)
		}
		hdr := m.FindBodySection(&imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}})
		if !bytes.HasPrefix(hdr, []byte("Subject:")) || m.Envelope == nil || !strings.Contains(string(hdr), "Subject: ") {
			t.Errorf("UID %d: HEADER.FIELDS (Subject) = %q", m.UID, hdr)
		}
		text := m.FindBodySection(&imap.FetchItemBodySection{Specifier: imap.PartSpecifierText})
		if !bytes.HasSuffix(want, text) || !bytes.HasPrefix(text, []byte("--rw")) {
			t.Errorf("UID %d: BODY[TEXT] = %q", m.UID, text)
		}
		if b := m.FindBodySection(&imap.FetchItemBodySection{Partial: &imap.SectionPartial{Offset: 1 << 30}}); len(b) != 0 {
			t.Errorf("UID %d: origin past the end gave %d bytes", m.UID, len(b))
		}

		// Partial chunks concatenate to BODY[].
		var cat []byte
		for off := int64(0); off < int64(len(want))+100; off += 100 {
			sec := &imap.FetchItemBodySection{Peek: true, Partial: &imap.SectionPartial{Offset: off, Size: 100}}
			pm, err := c.Fetch(imap.UIDSetNum(m.UID), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
			if err != nil || len(pm) != 1 {
				t.Fatalf("partial fetch: %v", err)
			}
			cat = append(cat, pm[0].FindBodySection(sec)...)
		}
		if !bytes.Equal(cat, want) {
			t.Errorf("UID %d: partials concatenate to %d bytes, want %d", m.UID, len(cat), len(want))
		}
	}
	rw.mu.Lock()
	for _, r := range rw.refs {
		if r.User != "alice" || r.Mailbox != "INBOX" || r.UIDValidity != sel.UIDValidity || !candidates[imap.UID(r.UID)] {
			t.Errorf("Rewrite called with %+v", r)
		}
	}
	rw.mu.Unlock()

	// Non-PEEK BODY[] of an unseen candidate (UID 5) sets \Seen upstream and reports it.
	sec := &imap.FetchItemBodySection{}
	fm, err := c.Fetch(imap.UIDSetNum(5), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil || len(fm) != 1 {
		t.Fatalf("FETCH BODY[]: %v", err)
	}
	if !slices.Contains(fm[0].Flags, imap.FlagSeen) {
		t.Errorf("FETCH BODY[] flags %v, want \\Seen", fm[0].Flags)
	}
	direct := dial(t, d.Addr(), "alice", "alice-pw", nil)
	if _, err := direct.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	dm, err := direct.Fetch(imap.UIDSetNum(5), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(dm) != 1 || !slices.Contains(dm[0].Flags, imap.FlagSeen) {
		t.Errorf("upstream flags of UID 5 after FETCH BODY[]: %v %v", dm, err)
	}
}
