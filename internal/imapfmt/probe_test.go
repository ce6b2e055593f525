package imapfmt

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

func TestProbe(t *testing.T) {
	raw, _ := os.ReadFile("/tmp/probe.txt")
	msgs := strings.Split(string(raw), "\n=====\n")
	d := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	c := dialRawIMAP(t, d.Addr(), "alice", "alice-pw")
	for i, m := range msgs {
		m = strings.ReplaceAll(m, "\\r", "\r")
		msgs[i] = m
		c.appendMessage("INBOX", []byte(m))
	}
	c.command("SELECT INBOX")
	for i, r := range c.command("FETCH 1:* (ENVELOPE BODY BODYSTRUCTURE)") {
		it, err := fetchItems(r)
		if err != nil {
			t.Fatal(err)
		}
		m := []byte(msgs[i])
		fmt.Println("EQUAL", i, string(it["ENVELOPE"]) == string(Envelope(m)), string(it["BODYSTRUCTURE"]) == string(BodyStructure(m, true)), string(it["ENVELOPE"][:min(40, len(it["ENVELOPE"]))]), string(it["ENVELOPE"][max(0, len(it["ENVELOPE"])-40):]), "OURS", string(Envelope(m)[:min(40, len(Envelope(m)))]), string(Envelope(m)[max(0, len(Envelope(m))-40):]))
		fmt.Printf("MSG %.150q\nENV  %.300q\nOURS %.300q\nBS   %.300q\nOURS %.300q\nEQUAL %v %v %v\n\n", m, it["ENVELOPE"], Envelope(m), it["BODYSTRUCTURE"], BodyStructure(m, true), string(it["ENVELOPE"]) == string(Envelope(m)), string(it["BODYSTRUCTURE"]) == string(BodyStructure(m, true)), string(it["BODY"]) == string(BodyStructure(m, false)))
	}
}
