package proxy

import (
	"slices"
	"testing"
)

// TestTieRanks: messages tie under a key exactly when they follow each other in ascending UID order both in
// the ascending and in the REVERSE list.
func TestTieRanks(t *testing.T) {
	// Keys: 5->a, 2->b, 7->b, 9->b, 3->c, 4->c. Ties are broken by ascending UID in both lists.
	asc := []uint32{5, 2, 7, 9, 3, 4}
	desc := []uint32{3, 4, 2, 7, 9, 5}
	got := tieRanks(asc, desc)
	want := map[uint32]int{5: 1, 2: 2, 7: 2, 9: 2, 3: 3, 4: 3}
	for u, r := range want {
		if got[u] != r {
			t.Errorf("UID %d: rank %d, want %d (all %v)", u, got[u], r, got)
		}
	}
	// Adjacent in ascending UID order in one list only: no tie.
	if r := tieRanks([]uint32{1, 2}, []uint32{2, 1}); r[1] >= r[2] {
		t.Errorf("1 sorts before 2 in both directions: %v", r)
	}
	if r := tieRanks([]uint32{1, 2}, []uint32{1, 2}); r[1] != r[2] {
		t.Errorf("1 and 2 in the same order in both directions do not tie: %v", r)
	}
}

func TestSortBySizeAndSearchResponse(t *testing.T) {
	for _, tc := range []struct {
		cmd, name string
		want      []sortCrit
	}{
		{"a SORT (ARRIVAL reverse size) UTF-8 ALL\r\n", "SORT", []sortCrit{{"ARRIVAL", false}, {"SIZE", true}}},
		{"a UID SORT (SIZE) US-ASCII 1:*\r\n", "UID SORT", []sortCrit{{"SIZE", false}}},
		{"a SORT (ARRIVAL) UTF-8 ALL\r\n", "SORT", nil},
		{"a SORT (DATE) UTF-8 ALL\r\n", "SORT", []sortCrit{{"DATE", false}}},
		{"a SORT RETURN (MIN) (SIZE) UTF-8 ALL\r\n", "SORT", []sortCrit{{"SIZE", false}}},
		{"a SORT RETURN (PARTIAL 1:5) (SIZE) UTF-8 ALL\r\n", "SORT", nil},
		{"a SORT RETURN (SAVE) (SUBJECT) UTF-8 ALL\r\n", "SORT", nil},
		{"a SORT RETURN (MIN) (SUBJECT) UTF-8 MODSEQ 5\r\n", "SORT", nil},
		{"a SORT (ARRIVAL) UTF-8 SUBJECT x\r\n", "SORT", nil},
		{"a SORT (REVERSE DISPLAYFROM) UTF-8 ALL\r\n", "SORT", []sortCrit{{"DISPLAYFROM", true}}},
		{"a SORT (SIZE X-SCORE) UTF-8 ALL\r\n", "SORT", nil},
		{"a SEARCH LARGER 5\r\n", "SEARCH", nil},
	} {
		var got []sortCrit
		if req := sortServed(unit(tc.cmd), tc.name); req != nil {
			got = req.crit
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, want %v", tc.cmd, got, tc.want)
		}
	}
	nums, suffix, ok := parseSearchResponse([]byte("* SEARCH 3 1 20 (MODSEQ 917)\r\n"))
	if !ok || !slices.Equal(nums, []uint32{3, 1, 20}) || string(suffix) != " (MODSEQ 917)" {
		t.Errorf("parseSearchResponse: %v %q %v", nums, suffix, ok)
	}
	if nums, _, ok := parseSearchResponse([]byte("* SEARCH\r\n")); !ok || len(nums) != 0 {
		t.Errorf("empty SEARCH: %v %v", nums, ok)
	}
}
