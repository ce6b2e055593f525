package proxy

import (
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

func TestLiteralAt(t *testing.T) {
	for _, tc := range []struct {
		line         string
		ok           bool
		size         int64
		nonSync, bin bool
		at           int
	}{
		{"a APPEND x {12}\r\n", true, 12, false, false, 11},
		{"a APPEND x {12+}\r\n", true, 12, true, false, 11},
		{"a APPEND x ~{3}\r\n", true, 3, false, true, 11},
		{"* 1 FETCH (BODY[] {0}\r\n", true, 0, false, false, 18},
		{"a LOGIN {5-}\r\n", false, 0, false, false, 0},
		{"a NOOP\r\n", false, 0, false, false, 0},
		{"a X {}\r\n", false, 0, false, false, 0},
		{"a X {1a}\r\n", false, 0, false, false, 0},
		{"a X {99999999999999999999}\r\n", false, 0, false, false, 0},
	} {
		m, ok := literalAt([]byte(tc.line))
		if ok != tc.ok || ok && (m.size != tc.size || m.nonSync != tc.nonSync || m.binary != tc.bin || m.at != tc.at) {
			t.Errorf("literalAt(%q) = %+v, %v", tc.line, m, ok)
		}
	}
}

func TestScannerTokens(t *testing.T) {
	s := &scanner{b: []byte("a \"q\\\"x\" {3}\r\nabc (NIL) BODY[1]\r\n")}
	var kinds []int
	var vals []string
	for {
		tok, err := s.next()
		if err != nil {
			t.Fatal(err)
		}
		if tok.kind == tokEOF {
			break
		}
		kinds = append(kinds, tok.kind)
		vals = append(vals, string(tok.val))
	}
	want := []int{tokAtom, tokQuoted, tokLiteral, tokOpen, tokAtom, tokClose, tokAtom, tokEOL}
	if len(kinds) != len(want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("kinds %v, want %v", kinds, want)
		}
	}
	if vals[1] != `q"x` || vals[2] != "abc" {
		t.Errorf("values %q", vals)
	}
	if _, err := (&scanner{b: []byte(`"open`)}).next(); err == nil {
		t.Error("unterminated quoted string accepted")
	}
	if _, err := (&scanner{b: []byte("{10}\r\nshort")}).next(); err == nil {
		t.Error("short literal accepted")
	}
}

func TestParseSectionItem(t *testing.T) {
	for _, tc := range []struct {
		name    string
		request bool
		ok      bool
		kind    string
		want    imap.FetchItemBodySection
		origin  int64
		length  int64
	}{
		{"BODY[]", false, true, "BODY", imap.FetchItemBodySection{}, 0, -1},
		{"BODY.PEEK[1.2.MIME]<5.10>", true, true, "BODY", imap.FetchItemBodySection{Part: []int{1, 2}, Specifier: imap.PartSpecifierMIME}, 5, 10},
		{"BODY[HEADER.FIELDS (From \"To\")]<0>", false, true, "BODY", imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"From", "To"}}, 0, -2},
		{"BINARY.SIZE[2]", false, true, "BINARY.SIZE", imap.FetchItemBodySection{Part: []int{2}}, 0, -1},
		{"BODY[0]", false, false, "", imap.FetchItemBodySection{}, 0, 0},
		{"BODY[MIME]", false, false, "", imap.FetchItemBodySection{}, 0, 0},
		{"BODY[1]<3>", true, false, "", imap.FetchItemBodySection{}, 0, 0},
		{"ENVELOPE", false, false, "", imap.FetchItemBodySection{}, 0, 0},
	} {
		sr, ok := parseSectionItem([]byte(tc.name), tc.request)
		if ok != tc.ok {
			t.Errorf("%s: ok = %v", tc.name, ok)
			continue
		}
		if !ok {
			continue
		}
		if sr.kind != tc.kind || !sameSection(&sr.sec, &tc.want) || sr.origin != tc.origin || sr.length != tc.length {
			t.Errorf("%s = %+v", tc.name, sr)
		}
	}
}

func TestPrepareFetchAddsUID(t *testing.T) {
	r := &relay{}
	for _, tc := range []struct{ in, out string }{
		{"a FETCH 1:* (FLAGS)\r\n", "a FETCH 1:* (FLAGS)\r\n"},
		{"a FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (A B)])\r\n", "a FETCH 1 (UID FLAGS BODY.PEEK[HEADER.FIELDS (A B)])\r\n"},
		{"a FETCH 1 BODY[]\r\n", "a FETCH 1 (UID BODY[])\r\n"},
		{"a FETCH 1 ALL\r\n", "a FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)\r\n"},
		{"a FETCH 1 (UID BODY[])\r\n", "a FETCH 1 (UID BODY[])\r\n"},
		{"a UID FETCH 1 (BODY[])\r\n", "a UID FETCH 1 (BODY[])\r\n"},
		{"a FETCH 1 (RFC822.SIZE) (CHANGEDSINCE 5)\r\n", "a FETCH 1 (UID RFC822.SIZE) (CHANGEDSINCE 5)\r\n"},
	} {
		c := newCommand("a", "FETCH")
		if strings.Contains(tc.in, "UID FETCH") {
			c.name = "UID FETCH"
		}
		if got := string(r.prepareFetch(c, unit(tc.in))); got != tc.out {
			t.Errorf("prepareFetch(%q) = %q, want %q", tc.in, got, tc.out)
		}
	}
	c := newCommand("a", "FETCH")
	r.prepareFetch(c, unit("a FETCH 1 (BODY[1]<0.10> BINARY.PEEK[2]<4.8>)\r\n"))
	if len(c.fetch.sections) != 2 || c.fetch.sections[0].length != 10 || c.fetch.sections[1].origin != 4 || c.fetch.sections[1].kind != "BINARY" {
		t.Errorf("sections %+v", c.fetch.sections)
	}
}

func TestSearchKeys(t *testing.T) {
	for _, tc := range []struct {
		cmd, name string
		needles   []string
	}{
		{"a SEARCH BODY foo\r\n", "SEARCH", []string{"foo"}},
		{"a UID SEARCH RETURN (MIN) CHARSET UTF-8 OR TEXT \"a b\" (NOT BODY {3}\r\nxyz) SUBJECT BODY\r\n", "UID SEARCH", []string{"a b", "xyz"}},
		{"a SORT (DATE) UTF-8 BODY x HEADER Subject body\r\n", "SORT", []string{"x"}},
		{"a THREAD REFERENCES UTF-8 1:5 TEXT y MODSEQ 7\r\n", "THREAD", []string{"y"}},
		{"a SEARCH SUBJECT x\r\n", "SEARCH", nil},
	} {
		s, ok := searchProgram(unit(tc.cmd), tc.name)
		if !ok {
			t.Fatalf("%q: no program", tc.cmd)
		}
		keys, err := searchKeys(s, 0)
		if err != nil {
			t.Fatalf("%q: %v", tc.cmd, err)
		}
		var got []string
		for _, k := range keys {
			got = append(got, k.needle)
		}
		if strings.Join(got, "|") != strings.Join(tc.needles, "|") {
			t.Errorf("%q: needles %q, want %q", tc.cmd, got, tc.needles)
		}
	}
	// Unknown keys stop the rewrite (the command goes up unchanged).
	s, _ := searchProgram(unit("a SEARCH X-GM-RAW foo BODY x\r\n"), "SEARCH")
	if _, err := searchKeys(s, 0); err == nil {
		t.Error("unknown key accepted")
	}
	if got := uidSetString([]uint32{1, 2, 3, 5, 7, 8}); got != "1:3,5,7:8" {
		t.Errorf("uidSetString = %q", got)
	}
}

func TestDecodeMUTF7(t *testing.T) {
	for in, want := range map[string]string{
		"INBOX": "INBOX", "&-": "&", "Entw&APw-rfe": "Entwürfe", "&ZeVnLIqe-": "日本語", "a&-b": "a&b",
	} {
		if got, err := decodeMUTF7(in); err != nil || got != want {
			t.Errorf("decodeMUTF7(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"&foo", "&AGE-", "&Jjo", "x\x80"} {
		if _, err := decodeMUTF7(bad); err == nil {
			t.Errorf("decodeMUTF7(%q) accepted", bad)
		}
	}
}

func TestFilterCaps(t *testing.T) {
	var seen string
	got := filterCapsInLine([]byte("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN AUTH=SCRAM-SHA-1 LITERAL+ COMPRESS=DEFLATE NOTIFY PREVIEW URLAUTH SORT] ready\r\n"),
		true, func(l []byte) { seen = string(l) })
	if string(got) != "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LITERAL+ NOTIFY SORT] ready\r\n" {
		t.Errorf("filtered %q", got)
	}
	if !parseCaps([]byte(seen)).literalPlus {
		t.Error("LITERAL+ not seen in the unfiltered list")
	}
	got = filterCapsInLine([]byte("* CAPABILITY IMAP4rev1 PREVIEW STARTTLS\r\n"), false, func([]byte) {})
	if string(got) != "* CAPABILITY IMAP4rev1 PREVIEW\r\n" {
		t.Errorf("without decryption %q", got)
	}
}

func TestUntaggedKind(t *testing.T) {
	for line, want := range map[string]string{
		"* 3 FETCH (UID 1)\r\n": "FETCH", "* OK [UIDVALIDITY 5] x\r\n": "OK", "* CAPABILITY IMAP4rev1\r\n": "CAPABILITY",
		"* 4 EXISTS\r\n": "EXISTS", "* 2 expunge\r\n": "EXPUNGE", "* ESEARCH (TAG \"a\") ADDTO (0 3)\r\n": "ESEARCH",
		"* SEARCH 1 2\r\n": "", "* 4 RECENT\r\n": "", "* BYE\r\n": "BYE",
	} {
		if got, _ := untaggedKind([]byte(line)); got != want {
			t.Errorf("untaggedKind(%q) = %q, want %q", line, got, want)
		}
	}
	if got := string(withExpungeIssued([]byte("a OK Fetch completed.\r\n"))); got != "a OK [EXPUNGEISSUED] Fetch completed.\r\n" {
		t.Errorf("withExpungeIssued = %q", got)
	}
	if got := string(withExpungeIssued([]byte("a OK [X] y\r\n"))); got != "a OK [X] y\r\n" {
		t.Errorf("withExpungeIssued kept code: %q", got)
	}
}

func TestAuthIdentity(t *testing.T) {
	b64 := func(s string) []byte { return []byte(s) }
	for _, tc := range []struct {
		a    authInfo
		want string
	}{
		{authInfo{login: true, user: "bob"}, "bob"},
		{authInfo{mech: "PLAIN", responses: [][]byte{b64("\x00alice\x00pw")}}, "alice"},
		{authInfo{mech: "PLAIN", responses: [][]byte{b64("admin\x00alice\x00pw")}}, "admin"},
		{authInfo{mech: "LOGIN", responses: [][]byte{b64("carol"), b64("pw")}}, "carol"},
		{authInfo{mech: "XOAUTH2", responses: [][]byte{b64("user=dave@example.org\x01auth=Bearer x\x01\x01")}}, "dave@example.org"},
		{authInfo{mech: "OAUTHBEARER", responses: [][]byte{b64("n,a=eve=2Cx@example.org,\x01auth=Bearer x\x01\x01")}}, "eve,x@example.org"},
	} {
		if got, err := tc.a.identity(); err != nil || got != tc.want {
			t.Errorf("%+v: identity = %q, %v", tc.a, got, err)
		}
	}
	if _, err := (&authInfo{mech: "PLAIN", responses: [][]byte{[]byte("nonul")}}).identity(); err == nil {
		t.Error("malformed PLAIN accepted")
	}
	if got := decodeSASL([]byte(base64.StdEncoding.EncodeToString([]byte("x")))); string(got) != "x" {
		t.Errorf("decodeSASL = %q", got)
	}
}

// FuzzFetchResponse: parsing and rewriting decisions over arbitrary FETCH responses never panic.
func FuzzFetchResponse(f *testing.F) {
	f.Add([]byte("* 1 FETCH (UID 5 FLAGS (\\Seen) BODY[HEADER.FIELDS (A)] {3}\r\nabc ENVELOPE (NIL \"x\" NIL NIL NIL NIL NIL NIL NIL NIL))\r\n"))
	f.Add([]byte("* 1 FETCH (BODY[1]<0> \"q\\\"\" BINARY.SIZE[1] 4)\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, _, _ := parseFetchItems(b)
		uidOf(b, items)
		hasBodyItem(items)
		for _, it := range items {
			if it.start > it.end || it.end > len(b) {
				t.Fatalf("item %+v out of range", it)
			}
			parseSectionItem(it.rawName, false)
			withoutItem(b, it)
		}
		r := &relay{}
		r.prepareFetch(newCommand("a", "FETCH"), b)
		if s, ok := searchProgram(b, "SEARCH"); ok {
			searchKeys(s, 0)
		}
		untaggedKind(append([]byte("* "), b...))
	})
}

func TestSkipValueAt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{`NIL rest`, 3},
		{`"a \" b" rest`, 8},
		{`(1 (2 "x)") {3}` + "\r\nabc) rest", 21},
		{"{3}\r\nabc rest", 8},
		{"~{2}\r\n\x00) rest", 8},
		{"(~{2}\r\n\x00)", -1},
		{"~{2}\r\n\x00\x01 rest", 8},
		{`("unterminated`, -1},
		{"{9}\r\nshort", -1},
		{`(a b`, -1},
	} {
		if got := skipValueAt([]byte(tc.in), 0); got != tc.want {
			t.Errorf("skipValueAt(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestLeadingUID(t *testing.T) {
	for in, want := range map[string][2]int{
		"* 1 FETCH (UID 17 FLAGS ())\r\n": {17, 7},
		"* 1 FETCH (uid 5)\r\n":           {5, 5},
		"* 1 FETCH (FLAGS () UID 5)\r\n":  {0, 0},
		"* 1 FETCH (UID x)\r\n":           {0, 0},
		"* 1 FETCH (UID 0 FLAGS ())\r\n":  {0, 0},
	} {
		uid, n := leadingUID([]byte(in))
		if int(uid) != want[0] || n != want[1] {
			t.Errorf("leadingUID(%q) = %d, %d; want %v", in, uid, n, want)
		}
	}
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// TestLoginDelay: failed logins from a client on another machine are answered later and later (at most 5 s);
// loopback clients (the mail client beside the proxy) are not slowed down.
func TestLoginDelay(t *testing.T) {
	remote := &relay{client: &clientConn{conn: addrConn{remote: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5}}}}
	local := &relay{client: &clientConn{conn: addrConn{remote: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5}}}}
	for failures, want := range map[int]time.Duration{0: 0, 1: time.Second, 3: 3 * time.Second, 9: 5 * time.Second} {
		remote.failures, local.failures = failures, failures
		if got := remote.loginDelay(); got != want {
			t.Errorf("remote, %d failures: %v, want %v", failures, got, want)
		}
		if got := local.loginDelay(); got != 0 {
			t.Errorf("loopback, %d failures: %v", failures, got)
		}
	}
}
