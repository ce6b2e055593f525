package decrypt

import (
	"slices"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/proxy"
)

// TestIndexEncoding: a mailbox's classification survives encoding (candidates as ranges), and damaged or
// foreign values are refused.
func TestIndexEncoding(t *testing.T) {
	for _, st := range []proxy.IndexState{
		{Classifier: "c1", Checked: 0},
		{Classifier: "c1", Checked: 9, Candidates: []uint32{1}},
		{Classifier: "abc", Checked: 20000, Candidates: []uint32{1, 2, 3, 7, 9, 10, 19999, 20000}},
		{Classifier: "abc", Checked: 1<<32 - 1, Candidates: []uint32{5, 1<<32 - 2, 1<<32 - 1}},
	} {
		b := encodeIndex(st)
		got, ok := decodeIndex(b)
		if !ok || got.Classifier != st.Classifier || got.Checked != st.Checked || !slices.Equal(got.Candidates, st.Candidates) {
			t.Errorf("decodeIndex(encodeIndex(%+v)) = %+v, %v", st, got, ok)
		}
		for i := range b {
			if _, ok := decodeIndex(b[:i]); ok && i > 0 {
				t.Errorf("a value cut to %d of %d bytes decodes", i, len(b))
			}
		}
	}
	many := proxy.IndexState{Classifier: "x", Checked: 20000}
	for u := uint32(1); u <= 20000; u++ {
		many.Candidates = append(many.Candidates, u)
	}
	if b := encodeIndex(many); len(b) > 16 {
		t.Errorf("20,000 consecutive candidates take %d bytes", len(b))
	}
	if _, ok := decodeIndex(append([]byte{indexVersion + 1}, encodeIndex(many)[1:]...)); ok {
		t.Error("a value of another version decodes")
	}
	// A candidate above Checked is refused.
	if _, ok := decodeIndex(encodeIndex(proxy.IndexState{Checked: 3, Candidates: []uint32{4}})); ok {
		t.Error("a candidate above Checked decodes")
	}
}

// TestSearchTextAgreesWithMatchText: the text kept in the metadata store for SEARCH BODY and TEXT (textOf,
// stored encoded) answers every search as MatchText does over the served copy, and a text over the bound is
// not stored.
func TestSearchTextAgreesWithMatchText(t *testing.T) {
	msgs := []string{
		searchMsg,
		"Subject: x\n\nLF only body\n",
		"\x00garbage needle",
		"Content-Type: multipart/mixed\r\n\r\nneedle",
		"Subject: a\r\nContent-Type: message/rfc822\r\n\r\nSubject: deep\r\nContent-Type: multipart/alternative; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain\r\n\r\nalt one\r\n--q--\r\n",
	}
	needles := []string{"pineapple", "grüße aus münchen", "hidden in BASE64", "binaryneedle", "quarterly", "jürgen",
		"inner body", "forwarded inner", "not there", "", "only", "needle", "subject", "content-type", "deep", "alt one",
		"multipart/alternative", "x", "a"}
	d := &Decrypter{metaGen: [8]byte{1, 2, 3}}
	for i, m := range msgs {
		st, ok := d.decodeText(d.encodeText(textOf([]byte(m))))
		if !ok {
			t.Fatalf("message %d: the stored text does not decode", i)
		}
		for _, n := range needles {
			for _, headerToo := range []bool{false, true} {
				if got, want := st.match(n, headerToo), MatchText([]byte(m), n, headerToo); got != want {
					t.Errorf("message %d, %q (headerToo %v): stored text says %v, MatchText %v", i, n, headerToo, got, want)
				}
			}
		}
	}
	if _, ok := (&Decrypter{}).decodeText(d.encodeText(textOf([]byte(searchMsg)))); ok {
		t.Error("a text of another generation decodes")
	}
	big := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef", maxStoredText/16+1)
	if v := d.encodeText(textOf([]byte(big))); v != nil {
		t.Errorf("a text over the bound is stored (%d bytes)", len(v))
	}
}
