package decrypt

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

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

// sortSubject wraps a generated subject in the leaders and trailers RFC 5256 section 2.1 strips.
func (g headerGen) sortSubject() string {
	s := g.subject()
	for range g.r.IntN(3) {
		s = g.pick("Re: ", "RE:", "re :", "Fwd: ", "FW:", "fw[x]: ", "[tag] ", "[a][b] ", " ", "Rex ") + s
	}
	switch g.r.IntN(6) {
	case 0:
		s += g.pick(" (fwd)", "(FWD)  ", " ")
	case 1:
		s = "[Fwd: " + s + "]"
	case 2:
		s = "[" + g.word() + "]"
	}
	return s
}

func (g headerGen) date() string {
	return g.pick("Mon, ", "", "Tue,", "Xyz, ") + fmt.Sprintf("%d %s %s %02d:%02d", 1+g.r.IntN(31),
		g.pick("Jan", "feb", "MARCH", "Foo"), g.pick("2026", "26", "99", "1899"), g.r.IntN(26), g.r.IntN(61)) +
		g.pick(":07", ":60", "", ".30") + g.pick(" +0100", " -0930", " EST", " pdt", " z", " Q", " GMT", "", " (c) +0000", " +01")
}

// TestSortKeyMatchesDovecot: for generated headers (address forms, encoded words, subject leaders, lenient and
// invalid dates), ordering by SortKey and then UID gives Dovecot's own SORT answer for every key, ascending and
// REVERSE.
func TestSortKeyMatchesDovecot(t *testing.T) {
	g := headerGen{rand.New(rand.NewPCG(29, 3))}
	const n = 150
	msgs := make([]string, n)
	internal := make([]time.Time, n)
	base := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	for i := range msgs {
		var b strings.Builder
		if i%7 != 0 {
			fmt.Fprintf(&b, "From: %s\r\n", g.addressList())
		}
		fmt.Fprintf(&b, "To: %s\r\n", g.addressList())
		if i%3 == 0 {
			fmt.Fprintf(&b, "Cc: %s\r\n", g.addressList())
		}
		if i%11 != 0 {
			fmt.Fprintf(&b, "Subject: %s\r\n", g.sortSubject())
		}
		if i%5 != 0 {
			fmt.Fprintf(&b, "Date: %s\r\n", g.date())
		}
		fmt.Fprintf(&b, "\r\nbody %d\r\n", i)
		msgs[i] = b.String()
		internal[i] = base.Add(time.Duration(g.r.IntN(5)) * time.Hour)
	}
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	for i, m := range msgs {
		d.Append("alice", "INBOX", []byte(m), nil, internal[i])
	}
	c := d.Dial("alice")
	defer c.Close()
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"SUBJECT", "FROM", "TO", "CC", "DISPLAYFROM", "DISPLAYTO", "DATE"} {
		keys := make([]string, n)
		for i, m := range msgs {
			k, ok := SortKey([]byte(m), key)
			if !ok {
				t.Fatalf("SortKey(%s) not ok", key)
			}
			if key == "DATE" && k == "" {
				k = fmt.Sprintf("%010d", internal[i].Unix())
			}
			keys[i] = k
		}
		for _, rev := range []bool{false, true} {
			got, err := c.UIDSort(&imapclient.SortOptions{SearchCriteria: &imap.SearchCriteria{},
				SortCriteria: []imapclient.SortCriterion{{Key: imapclient.SortKey(key), Reverse: rev}}}).Wait()
			if err != nil {
				t.Fatal(err)
			}
			want := make([]uint32, n)
			for i := range want {
				want[i] = uint32(i + 1)
			}
			slices.SortStableFunc(want, func(a, b uint32) int {
				d := strings.Compare(keys[a-1], keys[b-1])
				if rev {
					d = -d
				}
				return d
			})
			if !slices.Equal(got, want) {
				for i := range got {
					if i < len(want) && got[i] != want[i] {
						t.Errorf("SORT (%s%s): Dovecot %v, SortKey %v; first difference at %d: UID %d (%q, key %q) from Dovecot, UID %d (%q, key %q) here",
							map[bool]string{true: "REVERSE "}[rev], key, got, want, i, got[i], msgs[got[i]-1], keys[got[i]-1], want[i], msgs[want[i]-1], keys[want[i]-1])
						break
					}
				}
			}
		}
	}
}
