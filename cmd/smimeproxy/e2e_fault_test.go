package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// TestE2EUpstreamDrop: the upstream connection breaks in the middle of the ciphertext literal of a large
// encrypted message the proxy is reading to decrypt. The client gets BYE and no byte of plaintext, the
// connection closes, and the proxy's goroutines return to their number before the session.
func TestE2EUpstreamDrop(t *testing.T) {
	w := newE2EWorld(t)
	var pt bytes.Buffer
	pt.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
	for i := 0; pt.Len() < 3<<20; i++ {
		fmt.Fprintf(&pt, "LEAKCHECK line %06d of the secret report on numbat-11\r\n", i)
	}
	large := p7mMessage(e2eOuter, envelopeTo(t, pt.Bytes(), cmsKeys+"rsa.pem", "aes-256-cbc"), "enveloped-data")
	small := p7mMessage(e2eOuter, readFile(t, cmsFixtures+"rsa-v15-aes128-cbc.der"), "enveloped-data")
	w.d.Append("bob", "INBOX", small, nil, time.Time{})
	largeUID := w.d.Append("bob", "INBOX", large, nil, time.Time{})

	relay := testenv.NewRelay(t, w.d.TLSAddr())
	p := w.serve("imaps://" + relay.Addr())

	// Warm up: one session decrypts the small message, so Vault's keep-alive connection and cached keys exist
	// before the baseline is taken.
	res := runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1", "(BODY.PEEK[])")})
	if b := res[1].literal(t); status(b) != "decrypted" {
		t.Fatalf("warm-up: %q", statusFields(b))
	}
	time.Sleep(200 * time.Millisecond)
	leaks := testenv.LeakCheck(t)

	conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(conn)
	readUntil := func(prefix string) string {
		t.Helper()
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %q: %v", prefix, err)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		}
	}
	readUntil("* OK")
	fmt.Fprintf(conn, "a LOGIN bob bob-pw\r\n")
	readUntil("a OK")
	fmt.Fprintf(conn, "b SELECT INBOX\r\n")
	readUntil("b OK")
	relay.CutAfter(512 << 10) // mid-literal: the message is 4 MB
	fmt.Fprintf(conn, "c UID FETCH %d (RFC822.SIZE BODY.PEEK[])\r\n", largeUID)
	rest, err := io.ReadAll(br) // until the proxy closes the connection
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading after the cut: %v (got %q)", err, rest)
	}
	if !relay.Cut() {
		t.Fatal("the relay never cut the upstream connection")
	}
	if !bytes.Contains(rest, []byte("* BYE")) {
		t.Errorf("after the upstream dropped: %.500q (read error %v), want * BYE", rest, err)
	}
	if bytes.Contains(rest, []byte("c OK")) {
		t.Errorf("FETCH completed OK though the upstream dropped: %.500q", rest)
	}
	if bytes.Contains(rest, []byte("LEAKCHECK")) || bytes.Contains(rest, []byte("numbat-11")) {
		t.Error("plaintext of the cut message reached the client")
	}
	conn.Close()
	leaks(15 * time.Second)

	// The proxy still serves new sessions through the (re-opened) upstream path.
	relay.CutAfter(-1)
	res = runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1", "(BODY.PEEK[])")})
	if len(res) != 2 || status(res[1].literal(t)) != "decrypted" {
		t.Errorf("after the drop, a new session: %+v", res)
	}
	p.stop()
	if logs := p.stderr.String(); strings.Contains(logs, "LEAKCHECK") || strings.Contains(logs, "numbat-11") {
		t.Error("serve log holds plaintext of the cut message")
	}
	w.checkSecrets("serve log", p.stderr.String())
}
