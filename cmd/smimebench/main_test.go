package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

func TestParse(t *testing.T) {
	var errOut bytes.Buffer
	c, err := parse([]string{"-quick"}, &errOut)
	if err != nil || c.n != 50 || c.big != 5000000 || !c.vault {
		t.Errorf("parse(-quick) = %+v, %v", c, err)
	}
	c, err = parse([]string{"-quick", "-n", "7", "-vault=false", "-serve-env", "GOGC=50"}, &errOut)
	if err != nil || c.n != 7 || c.big != 5000000 || c.vault || len(c.serveEnv) != 1 {
		t.Errorf("parse(-quick -n 7 -vault=false) = %+v, %v", c, err)
	}
	for _, bad := range [][]string{{"-size", "10"}, {"-n", "0"}, {"-big", "100000000"}, {"-serve-env", "novalue"}, {"extra"}} {
		if _, err := parse(bad, &errOut); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

// TestCheckers: the verification that makes a run fail catches a wrong body, a missing status and a plain
// message that changed.
func TestCheckers(t *testing.T) {
	id, err := newIdentity("bench@example.org")
	if err != nil {
		t.Fatal(err)
	}
	var twins []twin
	for i := range 3 {
		tw, err := makeTwin(i, 4000, id.cert)
		if err != nil {
			t.Fatal(err)
		}
		if len(tw.enc) < 3500 || len(tw.enc) > 4500 || !bytes.Contains(tw.plain, []byte(messageID(i))) {
			t.Fatalf("twin %d: encrypted %d bytes", i, len(tw.enc))
		}
		twins = append(twins, tw)
	}
	served := func(i int, body []byte) []byte {
		hdr, _, _ := bytes.Cut(twins[i].plain, []byte("\r\n\r\n"))
		return append([]byte("X-Smimeproxy-Status: decrypted; key=sha256:00\r\n"+string(hdr)+"\r\n\r\n"), body...)
	}
	dec := decryptedChecker(twins)
	if i, err := dec(served(1, twins[1].body)); err != nil || i != 1 {
		t.Errorf("decrypted message 1: %d, %v", i, err)
	}
	if _, err := dec(served(1, twins[2].body)); err == nil {
		t.Error("a decrypted message with another message's body passed")
	}
	if _, err := dec(twins[0].plain); err == nil || !strings.Contains(err.Error(), "not served decrypted") {
		t.Errorf("a message without the decrypted status: %v", err)
	}
	plain := plainChecker(twins)
	if i, err := plain(twins[2].plain); err != nil || i != 2 {
		t.Errorf("plain message 2: %d, %v", i, err)
	}
	changed := bytes.Clone(twins[2].plain)
	changed[len(changed)-3] ^= 1
	if _, err := plain(changed); err == nil {
		t.Error("a changed plain message passed")
	}
	if _, err := rawChecker(twins)(twins[0].enc); err != nil {
		t.Errorf("raw message 0: %v", err)
	}
	if err := checkStreamed(bytes.NewReader(served(0, twins[0].body)), twins[0].body); err != nil {
		t.Errorf("checkStreamed: %v", err)
	}
	if err := checkStreamed(bytes.NewReader(served(0, twins[0].body)), twins[1].body); err == nil {
		t.Error("checkStreamed accepted another body")
	}
}

// TestRunSmall runs the whole bench small: real Dovecot, Vault, openssl and a smimeproxy serve child. Every
// goal gets a PASS or MISS line and the run succeeds (every message verified).
func TestRunSmall(t *testing.T) {
	testenv.RequireIntegration(t, "Dovecot, the Vault dev server and openssl")
	if testing.Short() {
		t.Log("-short: running without the big-message step")
	}
	args := []string{"-n", "20", "-size", "6000", "-big", "300000", "-rounds", "1", "-openssl-sample", "5"}
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != exitOK {
		t.Fatalf("run(%q) = %d\nstdout:\n%s\nstderr:\n%s", args, code, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []string{"crypto floor", "1st fetch overhead", "2nd fetch", "openssl process", "peak RSS (VmHWM",
		"plain through the proxy ÷ plain direct", "20 of 20 messages"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "PASS") + strings.Count(got, "MISS"); n != 4 {
		t.Errorf("%d PASS/MISS results, want 4:\n%s", n, got)
	}
}
