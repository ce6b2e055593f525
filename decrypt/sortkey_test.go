package decrypt

import "testing"

// TestBaseSubject: RFC 5256 section 2.1 as Dovecot's imap-base-subject.c applies it (normalized to title case
// first, so the leaders are matched in upper case).
func TestBaseSubject(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"Re: zebra minutes", "ZEBRA MINUTES"},
		{"RE: re: FW: apple pie (fwd)", "APPLE PIE"},
		{"[list] Apple pie", "APPLE PIE"},
		{"[only a blob]", "[ONLY A BLOB]"},
		{"[a] [b]", "[B]"},
		{"re: [blob]", "[BLOB]"},
		{"[Fwd: banana split]", "BANANA SPLIT"},
		{"[FWD: Re: [x] nested (fwd)]  ", "NESTED"},
		{"Fwd:Fwd: re[list]: deep", "DEEP"},
		{"re : spaced out", "SPACED OUT"},
		{"Fw[x]: zebra", "ZEBRA"},
		{"  Weekly \t digest", "WEEKLY DIGEST"},
		{"(fwd) (FWD)", ""},
		{"FW:", ""},
		{"Rex: not a leader", "REX: NOT A LEADER"},
		{"=?UTF-8?Q?Re=3A_caf=C3=A9?=", "CAFE\u0301"},
		{"=?ISO-8859-1?Q?=C4rger?= (fwd)", "A\u0308RGER"},
	} {
		if got := BaseSubject(c.in); got != c.want {
			t.Errorf("BaseSubject(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestSortKey: the address keys read the first address of the first field; the display keys fall back to
// mailbox@domain; DATE is the parsed date as ten digits, "" when there is none.
func TestSortKey(t *testing.T) {
	const hdr = "From: \"Zed Last\" <zed@example.org>, amy@example.org\r\n" +
		"To: =?UTF-8?Q?=C3=89mile?= <emile@example.org>\r\nCc: team: dan@example.org;\r\n" +
		"Subject: Re: [x] hello\r\nDate: Thu, 01 Jan 1970 00:01:40 +0000\r\nFrom: later@example.org\r\n\r\nbody From: x\r\n"
	for _, c := range []struct{ key, want string }{
		{"SUBJECT", "HELLO"},
		{"FROM", "ZED"},
		{"DISPLAYFROM", "ZED LAST"},
		{"TO", "EMILE"},
		{"DISPLAYTO", "E\u0301MILE"},
		{"CC", "TEAM"},
		{"DATE", "0000000100"},
	} {
		if got, ok := SortKey([]byte(hdr), c.key); !ok || got != c.want {
			t.Errorf("SortKey(%s) = %q, %v; want %q", c.key, got, ok, c.want)
		}
	}
	for _, c := range []struct{ hdr, key, want string }{
		{"From: <noname@example.org>\r\n\r\n", "DISPLAYFROM", "NONAME@EXAMPLE.ORG"},
		{"From: \"\" <empty@example.org>\r\n\r\n", "DISPLAYFROM", "EMPTY@EXAMPLE.ORG"},
		{"From: alice\r\n\r\n", "DISPLAYFROM", "ALICE@MISSING_DOMAIN"},
		{"From: x@y (Comment Name)\r\n\r\n", "DISPLAYFROM", "COMMENT NAME"},
		{"To: x@y\r\n\r\n", "CC", ""},
		{"Date: garbage\r\n\r\n", "DATE", ""},
		{"Date: Tue, 31 Feb 2026 10:00:00 +0000\r\n\r\n", "DATE", ""},
		{"\r\n", "SUBJECT", ""},
	} {
		if got, ok := SortKey([]byte(c.hdr), c.key); !ok || got != c.want {
			t.Errorf("SortKey(%q, %s) = %q, %v; want %q", c.hdr, c.key, got, ok, c.want)
		}
	}
	if _, ok := SortKey([]byte("Subject: x\r\n\r\n"), "ARRIVAL"); ok {
		t.Errorf("SortKey(ARRIVAL) is ok")
	}
}
