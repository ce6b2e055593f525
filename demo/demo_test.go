package demo

import (
	"bytes"
	"context"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func startDemo(t *testing.T) *Demo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := Start(ctx, Options{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// curlUID fetches one message with curl, a real IMAP client.
func curlUID(t *testing.T, addr string, uid int) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "imap://" + addr + "/INBOX;UID=" + strconv.Itoa(uid)
	out, err := exec.CommandContext(ctx, "curl", "--silent", "--show-error", "--max-time", "20",
		"--user", DefaultUser+":"+DefaultPassword, url).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("curl %s: %v: %s", url, err, ee.Stderr)
		}
		t.Fatalf("curl %s: %v", url, err)
	}
	return out
}

func TestDemoCurl(t *testing.T) {
	d := startDemo(t)
	for i, s := range Samples {
		got := curlUID(t, d.Addr(), i+1)
		if st := StatusOf(got); st != s.Status {
			t.Errorf("UID %d %q: status %q, want %q\n%s", i+1, s.Subject, st, s.Status, got)
		}
		if s.Plaintext != "" && !bytes.Contains(got, []byte(s.Plaintext)) {
			t.Errorf("UID %d %q: plaintext %q missing:\n%s", i+1, s.Subject, s.Plaintext, got)
		}
		if !bytes.Contains(got, []byte("Subject: "+s.Subject)) {
			t.Errorf("UID %d: subject %q missing", i+1, s.Subject)
		}
		if s.Status == "undecryptable" && !strings.Contains(statusField(got), "reason=") {
			t.Errorf("UID %d: undecryptable without reason: %q", i+1, statusField(got))
		}
		// What the mail server stores: ciphertext for the encrypted samples, no status header ever.
		raw := curlUID(t, d.UpstreamAddr(), i+1)
		if StatusOf(raw) != "" {
			t.Errorf("UID %d: upstream copy carries a status header", i+1)
		}
		if s.Status != "" && s.Plaintext != "" && bytes.Contains(raw, []byte(s.Plaintext)) {
			t.Errorf("UID %d: plaintext upstream", i+1)
		}
		if s.Status != "" && !bytes.Contains(raw, []byte("application/pkcs7-mime")) {
			t.Errorf("UID %d: upstream copy is not S/MIME:\n%s", i+1, raw)
		}
	}
}

// TestDemoPython reads through the proxy with Python's imaplib, as the printed one-liner does.
func TestDemoPython(t *testing.T) {
	d := startDemo(t)
	host, port, _ := net.SplitHostPort(d.Addr())
	script := `
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login('demo', 'demo')
typ, _ = m.select('INBOX', readonly=True)
assert typ == 'OK', typ
typ, data = m.uid('FETCH', '1:*', '(RFC822.SIZE BODY.PEEK[])')
assert typ == 'OK', typ
msgs = {}
for item in data:
    if isinstance(item, tuple):
        meta, body = item
        size = int(meta.split(b'RFC822.SIZE ')[1].split()[0].rstrip(b')'))
        assert size == len(body), (meta, len(body))
        uid = int(meta.split(b'UID ')[1].split()[0].rstrip(b')'))
        msgs[uid] = body
for uid in sorted(msgs):
    sys.stdout.buffer.write(msgs[uid] + b'\n=====\n')
m.logout()
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("python imaplib: %v\n%s", err, out)
	}
	msgs := strings.Split(string(out), "\n=====\n")
	if len(msgs) != len(Samples)+1 {
		t.Fatalf("python read %d messages, want %d:\n%s", len(msgs)-1, len(Samples), out)
	}
	for i, s := range Samples {
		if st := StatusOf([]byte(msgs[i])); st != s.Status {
			t.Errorf("message %d: status %q, want %q", i+1, st, s.Status)
		}
		if s.Plaintext != "" && !strings.Contains(msgs[i], s.Plaintext) {
			t.Errorf("message %d: plaintext missing", i+1)
		}
	}
}

func TestDemoCheck(t *testing.T) {
	d := startDemo(t)
	if err := d.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	d.Instructions(&b)
	want := "curl --user demo:demo 'imap://" + d.Addr() + "/INBOX;UID=1'"
	if !strings.Contains(b.String(), want) {
		t.Errorf("instructions lack %q:\n%s", want, b.String())
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	if _, err := Start(context.Background(), Options{Listen: "0.0.0.0:1143"}); err == nil {
		t.Fatal("Start on 0.0.0.0: no error")
	}
}

func TestListenFallsBackWhenBusy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ln, err := listenLoopback(busy.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() == busy.Addr().String() {
		t.Fatal("listened on the busy address")
	}
}

// TestDemoSignatureSurvives: the signed-then-encrypted sample, read through the proxy, is a multipart/signed
// message whose signature openssl verifies (the proxy serves the decrypted entity byte for byte).
func TestDemoSignatureSurvives(t *testing.T) {
	d := startDemo(t)
	got := curlUID(t, d.Addr(), 2)
	if StatusOf(got) != "decrypted" {
		t.Fatalf("status %q", StatusOf(got))
	}
	dir := t.TempDir()
	msgPath := filepath.Join(dir, "signed.eml")
	if err := os.WriteFile(msgPath, got, 0o600); err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "demo.pem")
	if err := os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "cms", "-verify", "-in", msgPath, "-CAfile", caPath, "-purpose", "any").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(Samples[1].Plaintext)) {
		t.Errorf("verified content lacks the plaintext:\n%s", out)
	}
}
