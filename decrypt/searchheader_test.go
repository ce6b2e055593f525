package decrypt

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// headerCases are Dovecot's header search semantics that MatchSearchHeader imitates, over caseHeader
// (TestMatchSearchHeaderMatchesDovecot asks Dovecot each of them too).
const caseHeader = "From: \"Alice Example\" <alice@inner.example>\r\n" +
	"To: bob@example.org (Bob Comment), team: dan@example.org, erin@example.org;\r\n" +
	"Cc: alice\r\n" +
	"Subject:   Weekly   kumquat\r\n\tdigest =?UTF-8?Q?Caf=C3=A9?=\r\n" +
	"X-Subject:   Weekly   kumquat\r\n\tdigest =?UTF-8?Q?Caf=C3=A9?=\r\n" +
	"X-Note: two  spaces\r\n\r\nbody: not a header\r\n"

var headerCases = []struct {
	key, name, needle string
	want              bool
}{
	{"FROM", "", "alice", true},
	{"FROM", "", `"Alice Example" <alice@`, true},
	{"FROM", "", "Example <", false}, // the display name is written quoted
	{"FROM", "", "inner.example>", true},
	{"TO", "", "\"Bob Comment\" <bob@", true}, // a comment becomes the display name
	{"TO", "", "(Bob", false},
	{"TO", "", "team: <dan@example.org>, <erin@example.org>;", true},
	{"CC", "", "alice@MISSING_DOMAIN", true},
	{"CC", "", "", true},
	{"BCC", "", "", false},
	{"SUBJECT", "", "weekly kumquat digest", true}, // white space runs are one space, the fold too
	{"SUBJECT", "", "café", true},
	{"SUBJECT", "", "cafe", true}, // E and a combining acute: the base letter is found
	{"SUBJECT", "", "=?utf-8", false},
	{"HEADER", "X-Subject", "weekly   kumquat digest", true}, // HEADER keeps the white space as it is
	{"HEADER", "X-Subject", "weekly kumquat", false},
	{"HEADER", "x-note", "two  spaces", true},
	{"HEADER", "Body", "", false},
	{"HEADER", "X-Missing", "", false},
}

func TestMatchSearchHeaderCases(t *testing.T) {
	for _, tc := range headerCases {
		if got := MatchSearchHeader([]byte(caseHeader), tc.key, tc.name, tc.needle); got != tc.want {
			t.Errorf("MatchSearchHeader(%s %s %q) = %v, want %v", tc.key, tc.name, tc.needle, got, tc.want)
		}
	}
}

// headerGen builds random header values of the forms that mail carries (display names plain, quoted, with
// commas, comments or encoded words; addresses without domain, with routes, in groups; folded and encoded
// subjects), valid and not.
type headerGen struct{ r *rand.Rand }

func (g headerGen) pick(l ...string) string { return l[g.r.IntN(len(l))] }

func (g headerGen) word() string {
	return g.pick("alice", "Bob", "kumquat", "Zoë", "Ölberg", "x.y", "O'Neil", "relay", "MISSING", "a_b", "jo+tag")
}

func (g headerGen) name() string {
	switch g.r.IntN(7) {
	case 0:
		return ""
	case 1:
		return g.word() + " "
	case 2:
		return `"` + g.word() + " " + g.word() + `" `
	case 3:
		return `"` + g.word() + `, ` + g.word() + `" `
	case 4:
		return "=?UTF-8?Q?" + strings.ReplaceAll(g.word(), " ", "_") + "_=C3=A9?= "
	case 5:
		return `"` + g.word() + `\" q" `
	}
	return g.word() + " " + g.word() + " "
}

func (g headerGen) address() string {
	local, domain := g.word(), g.pick("example.org", "inner.example", "relay.example")
	switch g.r.IntN(9) {
	case 0:
		return local + "@" + domain
	case 1:
		return local + "@" + domain + " (" + g.word() + " " + g.word() + ")"
	case 2:
		return g.name() + "<" + local + "@" + domain + ">"
	case 3:
		return local
	case 4:
		return g.name() + "<@" + domain + ":" + local + "@" + domain + ">"
	case 5:
		return `"` + local + ` x"@` + domain
	case 6:
		return g.word() + ": " + g.address() + ", " + g.address() + ";"
	case 7:
		return "<" + local + "@" + domain
	}
	return g.name() + "<" + local + "@" + domain + ">"
}

func (g headerGen) addressList() string {
	var b strings.Builder
	for i := range 1 + g.r.IntN(3) {
		if i > 0 {
			b.WriteString(g.pick(", ", ",\r\n\t", " ,"))
		}
		b.WriteString(g.address())
	}
	return b.String()
}

func (g headerGen) subject() string {
	var b strings.Builder
	for i := range 1 + g.r.IntN(5) {
		if i > 0 {
			b.WriteString(g.pick(" ", "  ", "\t", "\r\n ", "\r\n\t", " \t "))
		}
		switch g.r.IntN(6) {
		case 0:
			b.WriteString("=?UTF-8?Q?" + strings.ReplaceAll(g.word(), " ", "_") + "?=")
		case 1:
			b.WriteString("=?ISO-8859-1?Q?Caf=E9?=")
		case 2:
			b.WriteString("=?UTF-8?B?S8O2bG4=?=")
		case 3:
			b.WriteString("=?bogus?Q?half")
		default:
			b.WriteString(g.word())
		}
	}
	return b.String()
}

// needles returns search strings for a header: pieces of the values and of how Dovecot writes addresses.
func (g headerGen) needles(values []string) []string {
	out := []string{"", "<", ">", `"`, ", ", ";", ": ", "@", "missing_domain", "example.org>", "alice", "kumquat", "café",
		"koln", "köln", "\\", "(", "syntax_error", "invalid_route", " ", "zoe", "zoë", "oneil", "o'neil", `\"`}
	for range 40 {
		v := values[g.r.IntN(len(values))]
		if len(v) < 2 {
			continue
		}
		i := g.r.IntN(len(v) - 1)
		j := i + 1 + g.r.IntN(min(8, len(v)-i-1)+1)
		s := strings.ToValidUTF8(v[i:min(j, len(v))], "")
		if strings.ContainsAny(s, "\r\n") || s == "" {
			continue
		}
		out = append(out, s, `"`+s, s+">", "<"+s)
	}
	return out
}

// TestMatchSearchHeaderMatchesDovecot: MatchSearchHeader over generated headers gives Dovecot's own answer to
// SEARCH FROM, TO, CC, BCC, SUBJECT and HEADER for the same messages stored plain. (go-imap's client writes a
// HEADER criterion on From, To, Cc, Bcc or Subject as that key, so HEADER is asked on copies of those fields
// under other names.)
func TestMatchSearchHeaderMatchesDovecot(t *testing.T) {
	g := headerGen{rand.New(rand.NewPCG(13, 7))}
	const n = 120
	msgs := make([]string, n)
	var values []string
	for i := range msgs {
		from, to, cc, subject := g.addressList(), g.addressList(), g.addressList(), g.subject()
		note := g.subject()
		values = append(values, from, to, cc, subject)
		var b strings.Builder
		fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\n", from, to)
		if i%3 == 0 {
			fmt.Fprintf(&b, "Cc: %s\r\nBcc: %s\r\n", cc, g.address())
		}
		fmt.Fprintf(&b, "Subject: %s\r\nX-Note:%s\r\nX-To: %s\r\nX-Subject: %s\r\n\r\nbody %d\r\n", subject,
			g.pick(" ", "  ", "\t", "")+note, to, subject, i)
		msgs[i] = b.String()
	}
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	for _, m := range msgs {
		d.Append("alice", "INBOX", []byte(m), nil, time.Time{})
	}
	d.Append("alice", "INBOX", []byte(caseHeader), nil, time.Time{}) // UID n+1
	c := d.Dial("alice")
	defer c.Close()
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	search := func(key, name, needle string) map[imap.UID]bool {
		t.Helper()
		field := key
		if key == "HEADER" {
			field = name
		}
		data, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: field, Value: needle}}}, nil).Wait()
		if err != nil {
			t.Fatalf("SEARCH %s %q: %v", field, needle, err)
		}
		found := map[imap.UID]bool{}
		for _, u := range data.AllUIDs() {
			found[u] = true
		}
		return found
	}
	for _, tc := range headerCases {
		if got := search(tc.key, tc.name, tc.needle)[n+1]; got != tc.want {
			t.Errorf("Dovecot: %s %s %q over the case header = %v, the table says %v", tc.key, tc.name, tc.needle, got, tc.want)
		}
	}
	mismatches, positives, total := 0, 0, 0
	for _, key := range []struct{ key, name string }{{"FROM", ""}, {"TO", ""}, {"CC", ""}, {"BCC", ""}, {"SUBJECT", ""},
		{"HEADER", "X-Subject"}, {"HEADER", "X-Note"}, {"HEADER", "X-To"}} {
		for _, needle := range g.needles(values) {
			dovecot := search(key.key, key.name, needle)
			for i, m := range msgs {
				total++
				if dovecot[imap.UID(i+1)] {
					positives++
				}
				if got, want := MatchSearchHeader([]byte(m), key.key, key.name, needle), dovecot[imap.UID(i+1)]; got != want {
					mismatches++
					if mismatches <= 20 {
						t.Errorf("%s %s %q over %q: %v, Dovecot says %v", key.key, key.name, needle, m, got, want)
					}
				}
			}
		}
	}
	if mismatches > 20 {
		t.Errorf("%d mismatches in all", mismatches)
	}
	if positives < total/20 || positives > total/2 {
		t.Errorf("Dovecot matched %d of %d (needle, message) pairs: the needles do not test much", positives, total)
	}
	t.Logf("%d of %d (needle, message) pairs match", positives, total)
}

// FuzzMatchSearchHeader: any header and needle are searched under every key without panic; an ASCII word in a
// header field's value is found by HEADER on that field and by SUBJECT, and an empty needle finds the field.
func FuzzMatchSearchHeader(f *testing.F) {
	f.Add([]byte(caseHeader), "kumquat")
	f.Add([]byte("To: a: b@c, \"d\\\" e\" <f@g>;\r\n =?x?Q?=4?=\r\n\r\n"), "<")
	f.Add([]byte("From: =?UTF-8?B?w4Fsdm8=?= <@r:a@b>,,\r\nSubject: \t=?bogus?Q?half"), "é")
	f.Fuzz(func(t *testing.T, hdr []byte, needle string) {
		for _, key := range []string{"FROM", "TO", "CC", "BCC", "SUBJECT", "HEADER"} {
			MatchSearchHeader(hdr, key, "X-F", needle)
		}
		if len(needle) == 0 || len(needle) > 20 || !isPrintableASCII(needle) || strings.Contains(needle, "=?") {
			return
		}
		msg := []byte("X-F: xx" + needle + "yy\r\nSubject: " + needle + "\r\n\r\n")
		if !MatchSearchHeader(msg, "HEADER", "X-F", needle) || !MatchSearchHeader(msg, "HEADER", "x-f", "") {
			t.Errorf("HEADER X-F %q not found in %q", needle, msg)
		}
		if strings.TrimLeft(needle, " \t") == needle && !strings.Contains(needle, "  ") && !strings.Contains(needle, "\t") &&
			!MatchSearchHeader(msg, "SUBJECT", "", needle) {
			t.Errorf("SUBJECT %q not found in %q", needle, msg)
		}
	})
}
