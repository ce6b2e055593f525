package proxy_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// ctxLines keeps the responses a CONTEXT=SEARCH client acts on (EXISTS, EXPUNGE, ESEARCH, the tagged status),
// in order, without timings.
var ctxLineRE = regexp.MustCompile(`(?m)^(\* \d+ (EXISTS|EXPUNGE)|\* ESEARCH .*|\* NO \[NOUPDATE.*|t\d+ (OK|NO|BAD)( \[[A-Z]+\])?)`)

func ctxLines(r string) string { return strings.Join(ctxLineRE.FindAllString(r, -1), "\n") }

// TestSearchContextEncryptedAppend: a SEARCH RETURN (UPDATE) with a BODY key that the relay rewrote stays what
// Dovecot sends for the same program over plaintext (RFC 5267) while encrypted messages arrive (APPEND through
// the proxy, and another session's APPEND), change flags (STORE, STORE.SILENT), are expunged, and after
// CANCELUPDATE. One Dovecot holds the plaintext and is asked directly; the other holds the same messages
// encrypted and is asked through the proxy; the transcripts must be equal. The upstream server alone would
// never add an encrypted message (imaptest search-context-update).
func TestSearchContextEncryptedAppend(t *testing.T) {
	rw, certPEM := smimeRewriter(t, "alice")
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	encrypt := func(m []byte) []byte {
		out, err := decrypt.EncryptToSelf(m, []*x509.Certificate{cert})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	body := func(i int, text string) []byte {
		return msg([]string{"From: a@example.org", fmt.Sprintf("Subject: m%d", i), "Content-Type: text/plain"}, text+"\n")
	}
	date := time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC)
	plainD := testenv.StartDovecot(t, testenv.DovecotOptions{})
	encD := testenv.StartDovecot(t, testenv.DovecotOptions{})
	seedText := []string{"has body text", "nothing", "body again", "plain one with body", "no match here"}
	for i, text := range seedText {
		plainD.Append("alice", "INBOX", body(i, text), nil, date)
		m := body(i, text)
		if i != 3 { // message 4 stays plain in both
			m = encrypt(m)
		}
		encD.Append("alice", "INBOX", m, nil, date)
	}
	addr, _ := startProxy(t, encD, rw)

	type world struct {
		c, other *wireConn
		enc      bool
		d        *testenv.Dovecot
	}
	open := func(a string, d *testenv.Dovecot, enc bool) *world {
		w := &world{c: wireDial(t, a), other: wireDial(t, d.Addr()), enc: enc, d: d}
		w.c.do("LOGIN alice alice-pw")
		w.c.do("SELECT INBOX")
		w.other.do("LOGIN alice alice-pw")
		w.other.do("SELECT INBOX")
		return w
	}
	worlds := []*world{open(plainD.Addr(), plainD, false), open(addr, encD, true)}
	appendCmd := func(w *world, flags string, m []byte) string {
		if w.enc {
			m = encrypt(m)
		}
		return fmt.Sprintf("APPEND INBOX (%s) {%d+}\r\n%s", flags, len(m), m)
	}
	steps := []func(w *world) string{
		func(w *world) string { return w.c.do(`SEARCH RETURN (UPDATE) BODY body SEEN`) },      // t3
		func(w *world) string { return w.c.do(`UID SEARCH RETURN (UPDATE) NOT BODY secret`) }, // t4
		func(w *world) string { return w.c.do(`STORE 1,2,4 +FLAGS \Seen`) },
		func(w *world) string { return w.c.do(appendCmd(w, `\Seen`, body(6, "new body here"))) },  // 6: added to t3
		func(w *world) string { return w.c.do(appendCmd(w, `\Seen`, body(7, "no such word"))) },   // 7: t4 only
		func(w *world) string { return w.c.do(appendCmd(w, ``, body(8, "unseen body, secret"))) }, // 8: neither
		func(w *world) string { return w.c.do(`STORE 8 +FLAGS \Seen`) },
		func(w *world) string { return w.c.do(`STORE 8 -FLAGS.SILENT (\Seen)`) },
		func(w *world) string { return w.c.do(`STORE 8 +FLAGS.SILENT (\Seen)`) },
		func(w *world) string {
			// another session delivers one more
			m := body(9, "seen body from elsewhere")
			if w.enc {
				m = encrypt(m)
			}
			w.d.Append("alice", "INBOX", m, nil, date)
			w.other.do(`STORE 9 +FLAGS \Seen`)
			return w.c.do("NOOP")
		},
		func(w *world) string { return w.c.do(`STORE 6 +FLAGS \Deleted`) },
		func(w *world) string { return w.c.do(`EXPUNGE`) },
		func(w *world) string { return w.c.do(`STORE 7 -FLAGS \Seen`) }, // the former 8
		func(w *world) string { return w.c.do(`CANCELUPDATE "t3"`) },
		func(w *world) string { return w.c.do(`STORE 7 +FLAGS \Seen`) },
		func(w *world) string { return w.c.do(`STORE 1:* -FLAGS \Seen`) },
	}
	for i, step := range steps {
		var got [2]string
		for j, w := range worlds {
			got[j] = ctxLines(step(w))
		}
		if got[0] != got[1] {
			t.Errorf("step %d:\ndovecot over plaintext:\n%s\nproxy over ciphertext:\n%s", i+1, got[0], got[1])
		}
	}
	// The test shows something: the encrypted APPEND was added.
	pc := worlds[1].c
	pc.do(`SEARCH RETURN (UPDATE) BODY body`)
	tag := fmt.Sprintf("t%d", pc.n)
	if r := pc.do(appendCmd(worlds[1], `\Seen`, body(10, "body"))); !strings.Contains(r, `* 9 EXISTS`) ||
		!strings.Contains(r, `* ESEARCH (TAG "`+tag+`") ADDTO (0 9)`) {
		t.Errorf("encrypted APPEND not added: %q", r)
	}
	// A program the relay cannot judge by itself is refused rather than left to drift.
	if r := worlds[1].c.do(`SEARCH RETURN (UPDATE) BODY body SINCE 1-Jan-2020`); !strings.Contains(r, "NO [CANNOT]") {
		t.Errorf("unsupported context: %q", r)
	}
}
