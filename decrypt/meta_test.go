package decrypt

import (
	"slices"
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
