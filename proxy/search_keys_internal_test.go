package proxy

import (
	"strings"
	"testing"
)

// TestSearchHeaderKeys: with the header filter, BCC, CC, FROM, SUBJECT, TO and HEADER on fields the Rewriter
// does not own are collected with their key, field and needle, under NOT, OR and parentheses, in SEARCH, SORT
// and THREAD; HEADER on an owned field stays an owned key; without the filter none is collected.
func TestSearchHeaderKeys(t *testing.T) {
	owns := func(f string) bool { return strings.HasPrefix(strings.ToLower(f), "x-smimeproxy-") }
	for _, tc := range []struct {
		cmd, name string
		want      string // key:field:needle of each collected key
	}{
		{"a SEARCH FROM alice\r\n", "SEARCH", "FROM::alice"},
		{"a UID SEARCH RETURN (COUNT) OR SUBJECT \"a b\" (NOT HEADER X-Foo {3}\r\nxyz) CC c BCC d TO e\r\n", "UID SEARCH",
			"SUBJECT::a b|HEADER:X-Foo:xyz|CC::c|BCC::d|TO::e"},
		{"a SORT (SUBJECT) UTF-8 HEADER X-Smimeproxy-Status dec FROM x\r\n", "SORT", ":X-Smimeproxy-Status:dec|FROM::x"},
		{"a THREAD REFERENCES UTF-8 1:5 header subject \"\" BODY y\r\n", "THREAD", "HEADER:subject:|::y"},
	} {
		s, ok := searchProgram(unit(tc.cmd), tc.name)
		if !ok {
			t.Fatalf("%q: no program", tc.cmd)
		}
		keys, err := searchKeysOwned(s, 0, &keyFilter{owns: owns, headers: true})
		if err != nil {
			t.Fatalf("%q: %v", tc.cmd, err)
		}
		var got []string
		for _, k := range keys {
			got = append(got, k.hdrKey+":"+k.field+":"+k.needle)
			if k.owned() != (k.hdrKey == "" && k.field != "") {
				t.Errorf("%q: key %+v owned() = %v", tc.cmd, k, k.owned())
			}
		}
		if g := strings.Join(got, "|"); g != tc.want {
			t.Errorf("%q: keys %q, want %q", tc.cmd, g, tc.want)
		}
		s, _ = searchProgram(unit(tc.cmd), tc.name)
		keys, _ = searchKeysOwned(s, 0, nil)
		for _, k := range keys {
			if k.hdrKey != "" || k.field != "" {
				t.Errorf("%q: without a filter, key %+v collected", tc.cmd, k)
			}
		}
	}
}

// TestSearchCharset: the CHARSET of SEARCH, SORT and THREAD is found, and needles in it become UTF-8 as the
// server converts them before comparing.
func TestSearchCharset(t *testing.T) {
	for cmd, want := range map[string]string{
		"a SEARCH FROM x\r\n": "",
		"a UID SEARCH RETURN (MIN) CHARSET ISO-8859-1 FROM x\r\n": "ISO-8859-1",
		"a SORT (DATE) UTF-8 ALL\r\n":                             "UTF-8",
		"a UID THREAD REFERENCES \"windows-1252\" ALL\r\n":        "windows-1252",
	} {
		name := strings.Fields(cmd)[1]
		if name == "UID" {
			name += " " + strings.Fields(cmd)[2]
		}
		if _, cs, ok := searchProgramCharset(unit(cmd), name); !ok || cs != want {
			t.Errorf("%q: charset %q, %v; want %q", cmd, cs, ok, want)
		}
	}
	for _, tc := range []struct{ needle, charset, want string }{
		{"caf\xe9", "ISO-8859-1", "café"},
		{"caf\xe9", "iso-8859-1", "café"},
		{"café", "UTF-8", "café"},
		{"caf\xe9", "x-unknown", "caf\xe9"},
		{"abc", "", "abc"},
	} {
		if got := utf8Needle(tc.needle, tc.charset); got != tc.want {
			t.Errorf("utf8Needle(%q, %q) = %q, want %q", tc.needle, tc.charset, got, tc.want)
		}
	}
}
