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

var (
	generated = flag.Int("imapfmt.generated", 400, "number of random messages TestGeneratedMatchDovecot compares")
	seed      = flag.Uint64("imapfmt.seed", 1, "seed of the random messages of TestGeneratedMatchDovecot")
)

// TestMatchesDovecot APPENDs the corpus to a real Dovecot and compares its ENVELOPE, BODY and BODYSTRUCTURE
// byte for byte with ours: in the FETCH that first parses each message, again from a new session (when
// Dovecot answers from its cache), and for the corpus APPENDed with LF line endings.
func TestMatchesDovecot(t *testing.T) {
	if len(corpus) < 40 {
		t.Fatalf("corpus has %d messages, want at least 40", len(corpus))
	}
	crlf := make([][]byte, len(corpus))
	lf := make([][]byte, len(corpus))
	for i, m := range corpus {
		crlf[i] = m.bytes()
		lf[i] = lfOnly(crlf[i])
	}
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	appendMessages(t, d, "INBOX", crlf)
	appendMessages(t, d, "LF", lf)
	for _, mb := range []struct {
		name string
		msgs [][]byte
	}{{"INBOX", crlf}, {"LF", lf}} {
		for session := 1; session <= 2; session++ {
			for i, items := range fetchValues(t, d, mb.name, len(mb.msgs)) {
				compareValues(t, fmt.Sprintf("%s (%s, session %d)", corpus[i].name, mb.name, session), mb.msgs[i], items)
			}
		}
	}
}

// TestGeneratedMatchDovecot compares our values with Dovecot's for random, mostly malformed messages.
func TestGeneratedMatchDovecot(t *testing.T) {
	g := &messageGenerator{r: rand.New(rand.NewPCG(*seed, 2))}
	msgs := make([][]byte, *generated)
	for i := range msgs {
		msgs[i] = g.message()
	}
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	appendMessages(t, d, "INBOX", msgs)
	for i, items := range fetchValues(t, d, "INBOX", len(msgs)) {
		compareValues(t, fmt.Sprintf("generated message %d %q", i+1, msgs[i]), msgs[i], items)
	}
}

// TestLimitsMatchDovecot compares messages that exhaust what Dovecot parses of one message: addresses,
// Content-Language tags and parameters over all parts, and the size of a header block.
func TestLimitsMatchDovecot(t *testing.T) {
	addrs := func(n int, domain string) string {
		return strings.TrimSuffix(strings.Repeat("a@"+domain+", ", n), ", ")
	}
	params := strings.Repeat("; p=v", maxParams)
	msgs := [][]byte{
		[]byte("To: " + addrs(60000, "to.test") + "\r\nFrom: " + addrs(60000, "from.test") + "\r\n\r\nx\r\n"),
		[]byte("To: " + addrs(99990, "to.test") + "\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" +
			"Content-Type: message/rfc822\r\n\r\nFrom: " + addrs(20, "inner.test") + "\r\n\r\nx\r\n--b--\r\n"),
		[]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n" + strings.Repeat("--b\r\nContent-Type: text/plain"+
			params+"\r\nContent-Disposition: attachment"+params+"\r\n\r\nx\r\n", 800) + "--b--\r\n"),
		[]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n" + strings.Repeat("--b\r\nContent-Language: "+
			strings.Repeat("en, ", 30000)+"de\r\n\r\nx\r\n", 4) + "--b--\r\n"),
		[]byte("X-Filler: " + strings.Repeat(strings.Repeat("x ", 500)+"\r\n ", 11000) + "\r\nSubject: after\r\n" +
			"Content-Description: d\r\nMIME-Version: 1.0\r\n\r\nx\r\n"),
	}
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	appendMessages(t, d, "INBOX", msgs)
	for i, items := range fetchValues(t, d, "INBOX", len(msgs)) {
		compareValues(t, fmt.Sprintf("limit message %d", i+1), msgs[i], items)
	}
}

// appendMessages stores msgs in mailbox (created if it is not INBOX); they get the UIDs 1, 2...
func appendMessages(t *testing.T, d *testenv.Dovecot, mailbox string, msgs [][]byte) {
	t.Helper()
	c := dialRawIMAP(t, d.Addr(), "alice", d.Password("alice"))
	if mailbox != "INBOX" {
		c.command("CREATE " + strconv.Quote(mailbox))
	}
	for _, m := range msgs {
		c.appendMessage(mailbox, m)
	}
}

// fetchValues returns, from a new session, the raw FETCH items of the n messages of mailbox by UID order.
func fetchValues(t *testing.T, d *testenv.Dovecot, mailbox string, n int) []map[string][]byte {
	t.Helper()
	c := dialRawIMAP(t, d.Addr(), "alice", d.Password("alice"))
	c.command("EXAMINE " + strconv.Quote(mailbox))
	resps := c.command("UID FETCH 1:* (ENVELOPE BODY BODYSTRUCTURE)")
	if len(resps) != n {
		t.Fatalf("%s: %d FETCH responses for %d messages", mailbox, len(resps), n)
	}
	values := make([]map[string][]byte, n)
	for _, resp := range resps {
		items, err := fetchItems(resp)
		if err != nil {
			t.Fatal(err)
		}
		uid, err := strconv.Atoi(string(items["UID"]))
		if err != nil || uid < 1 || uid > n || values[uid-1] != nil {
			t.Fatalf("bad UID in %.100q", resp)
		}
		values[uid-1] = items
	}
	return values
}

// compareValues compares our values for msg with the FETCH items Dovecot sent.
func compareValues(t *testing.T, where string, msg []byte, items map[string][]byte) {
	t.Helper()
	compare(t, where, "ENVELOPE", Envelope(msg), items["ENVELOPE"])
	compare(t, where, "BODY", BodyStructure(msg, false), items["BODY"])
	compare(t, where, "BODYSTRUCTURE", BodyStructure(msg, true), items["BODYSTRUCTURE"])
}

// lfOnly turns every CRLF into LF.
func lfOnly(msg []byte) []byte { return bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")) }

// compare reports a difference between our value and Dovecot's, with the text around the first differing
// octet and, for values of reasonable size, both in full.
func compare(t *testing.T, where, item string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	excerpt := func(b []byte) string {
		return fmt.Sprintf("%q ⟦%q⟧", b[max(0, i-60):min(i, len(b))], b[min(i, len(b)):min(i+60, len(b))])
	}
	msg := fmt.Sprintf("%s: %s differs from Dovecot at octet %d of %d (Dovecot: %d):\n  ours:    %s\n  dovecot: %s",
		where, item, i, len(got), len(want), excerpt(got), excerpt(want))
	if len(got)+len(want) < 4000 {
		msg += fmt.Sprintf("\n  full ours:    %q\n  full dovecot: %q", got, want)
	}
	t.Error(msg)
}
