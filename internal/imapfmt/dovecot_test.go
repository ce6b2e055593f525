package imapfmt

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// TestMatchesDovecot APPENDs the corpus to a real Dovecot and compares its ENVELOPE, BODY and BODYSTRUCTURE
// byte for byte with ours: in the FETCH that first parses each message, again from a new session (when
// Dovecot answers from its cache), and for the corpus APPENDed with LF line endings.
func TestMatchesDovecot(t *testing.T) {
	if len(corpus) < 40 {
		t.Fatalf("corpus has %d messages, want at least 40", len(corpus))
	}
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	c := dialRawIMAP(t, d.Addr(), "alice", "alice-pw")
	c.command(`CREATE "LF"`)
	for _, m := range corpus {
		c.appendMessage("INBOX", m.bytes())
		c.appendMessage("LF", lfOnly(m.bytes()))
	}

	for _, mailbox := range []string{"INBOX", "LF"} {
		for session := 1; session <= 2; session++ {
			c := dialRawIMAP(t, d.Addr(), "alice", "alice-pw")
			c.command(fmt.Sprintf("EXAMINE %q", mailbox))
			resps := c.command("UID FETCH 1:* (ENVELOPE BODY BODYSTRUCTURE)")
			if len(resps) != len(corpus) {
				t.Fatalf("%s: %d FETCH responses for %d messages", mailbox, len(resps), len(corpus))
			}
			for _, resp := range resps {
				items, err := fetchItems(resp)
				if err != nil {
					t.Fatal(err)
				}
				uid, err := strconv.Atoi(string(items["UID"]))
				if err != nil || uid < 1 || uid > len(corpus) {
					t.Fatalf("bad UID in %.100q", resp)
				}
				m := corpus[uid-1]
				msg := m.bytes()
				if mailbox == "LF" {
					msg = lfOnly(msg)
				}
				where := fmt.Sprintf("%s (%s, session %d)", m.name, mailbox, session)
				compare(t, where, "ENVELOPE", Envelope(msg), items["ENVELOPE"])
				compare(t, where, "BODY", BodyStructure(msg, false), items["BODY"])
				compare(t, where, "BODYSTRUCTURE", BodyStructure(msg, true), items["BODYSTRUCTURE"])
			}
		}
	}
}

var (
	generated = flag.Int("imapfmt.generated", 400, "number of random messages TestGeneratedMatchDovecot compares")
	seed      = flag.Uint64("imapfmt.seed", 1, "seed of the random messages of TestGeneratedMatchDovecot")
)

// TestGeneratedMatchDovecot compares our values with Dovecot's for random, mostly malformed messages.
func TestGeneratedMatchDovecot(t *testing.T) {
	g := &messageGenerator{r: rand.New(rand.NewPCG(*seed, 2))}
	msgs := make([][]byte, *generated)
	for i := range msgs {
		msgs[i] = g.message()
	}
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	c := dialRawIMAP(t, d.Addr(), "alice", "alice-pw")
	for _, m := range msgs {
		c.appendMessage("INBOX", m)
	}
	c.command("EXAMINE INBOX")
	resps := c.command("UID FETCH 1:* (ENVELOPE BODY BODYSTRUCTURE)")
	if len(resps) != len(msgs) {
		t.Fatalf("%d FETCH responses for %d messages", len(resps), len(msgs))
	}
	for _, resp := range resps {
		items, err := fetchItems(resp)
		if err != nil {
			t.Fatal(err)
		}
		uid, err := strconv.Atoi(string(items["UID"]))
		if err != nil || uid < 1 || uid > len(msgs) {
			t.Fatalf("bad UID in %.100q", resp)
		}
		msg := msgs[uid-1]
		where := fmt.Sprintf("generated message %d %q", uid, msg)
		compare(t, where, "ENVELOPE", Envelope(msg), items["ENVELOPE"])
		compare(t, where, "BODY", BodyStructure(msg, false), items["BODY"])
		compare(t, where, "BODYSTRUCTURE", BodyStructure(msg, true), items["BODYSTRUCTURE"])
	}
}

// lfOnly turns every CRLF into LF.
func lfOnly(msg []byte) []byte { return bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")) }

// compare reports a difference between our value and Dovecot's with the first differing position.
func compare(t *testing.T, where, item string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(0, i-60)
	t.Errorf("%s: %s differs from Dovecot at byte %d:\n  ours:    …%s\n  dovecot: …%s\n  full ours:    %q\n  full dovecot: %q",
		where, item, i, excerpt(got, from, i), excerpt(want, from, i), got, want)
}

// excerpt quotes b around the difference at i, marking it with ⟦⟧.
func excerpt(b []byte, from, i int) string {
	end := min(len(b), i+60)
	mid := min(i, len(b))
	q := func(s []byte) string { s2 := strconv.Quote(string(s)); return s2[1 : len(s2)-1] }
	return q(b[from:mid]) + "⟦" + q(b[mid:end]) + "⟧" + strings.Repeat("…", boolInt(end < len(b)))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
