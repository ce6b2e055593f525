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

	"github.com/smimeproxy/smimeproxy/internal/testenv"
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
	out, err := exec.CommandContext(ctx, testenv.LookPath(t, "curl"), "--silent", "--show-error", "--max-time", "20",
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
	out, err := exec.CommandContext(ctx, testenv.LookPath(t, "python3"), "-c", script, host, port).CombinedOutput()
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
	out, err := exec.Command(testenv.LookPath(t, "openssl"), "cms", "-verify", "-in", msgPath, "-CAfile", caPath, "-purpose", "any").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(Samples[1].Plaintext)) {
		t.Errorf("verified content lacks the plaintext:\n%s", out)
	}
}

// printedLine returns the line of d's instructions that starts (after indentation) with prefix.
func printedLine(t *testing.T, d *Demo, prefix string) string {
	t.Helper()
	var b bytes.Buffer
	d.Instructions(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("instructions lack a line starting with %q:\n%s", prefix, b.String())
	return ""
}

// TestDemoSendPrinted runs the printed curl and python smtplib one-liners as a newcomer would (real SMTP
// clients), then reads each message back through the proxy with curl: decrypted, signature valid. What the
// mail server stores is S/MIME ciphertext.
func TestDemoSendPrinted(t *testing.T) {
	testenv.LookPath(t, "curl") // the printed lines run curl and python3
	testenv.LookPath(t, "python3")
	d := startDemo(t)
	for i, c := range []struct{ prefix, text, subject string }{
		{"printf 'From:", "Signed and encrypted by smimeproxy.", "Hello from the demo"},
		{"python3 -c \"import smtplib", "Signed and encrypted by smimeproxy.", "Hello from Python"},
	} {
		line := printedLine(t, d, c.prefix)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, "sh", "-c", line).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		uid := len(Samples) + 1 + i
		got := curlUID(t, d.Addr(), uid)
		if st := StatusOf(got); st != "decrypted" {
			t.Errorf("UID %d: status %q, want decrypted\n%s", uid, st, got)
		}
		if sig := headerValue(got, "X-Smimeproxy-Signature"); !strings.HasPrefix(sig, "valid;") || !strings.Contains(sig, "signer="+DefaultEmail) {
			t.Errorf("UID %d: signature status %q, want valid by %s", uid, sig, DefaultEmail)
		}
		if !bytes.Contains(got, []byte(c.text)) || headerValue(got, "Subject") != c.subject {
			t.Errorf("UID %d: text or subject missing:\n%s", uid, got)
		}
		raw := curlUID(t, d.UpstreamAddr(), uid)
		if bytes.Contains(raw, []byte(c.text)) || !bytes.Contains(raw, []byte("application/pkcs7-mime")) {
			t.Errorf("UID %d upstream is not ciphertext:\n%s", uid, raw)
		}
	}
	// The printed read-back command names the first sent message.
	want := "curl --user demo:demo 'imap://" + d.Addr() + "/INBOX;UID=" + strconv.Itoa(len(Samples)+1) + "'"
	var b bytes.Buffer
	d.Instructions(&b)
	if !strings.Contains(b.String(), want) {
		t.Errorf("instructions lack %q", want)
	}
}

// TestDemoSendProtectedSubject: with ProtectSubject the stored copy's Subject is "[...]" and the proxy serves
// the real one (RFC 9788, hp="cipher").
func TestDemoSendProtectedSubject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := Start(ctx, Options{Listen: "127.0.0.1:0", SubmissionListen: "127.0.0.1:0", ProtectSubject: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	msg := "From: " + DefaultEmail + "\r\nTo: " + DefaultEmail + "\r\nSubject: Quarterly numbers\r\n\r\nUp 4%.\r\n"
	if err := sendMail(ctx, d.SubmissionAddr(), msg); err != nil {
		t.Fatal(err)
	}
	uid := len(Samples) + 1
	raw := curlUID(t, d.UpstreamAddr(), uid)
	if headerValue(raw, "Subject") != "[...]" || bytes.Contains(raw, []byte("Quarterly")) {
		t.Errorf("stored copy shows the subject:\n%s", raw)
	}
	got := curlUID(t, d.Addr(), uid)
	if headerValue(got, "Subject") != "Quarterly numbers" || StatusOf(got) != "decrypted" || !bytes.Contains(got, []byte("Up 4%.")) {
		t.Errorf("served copy:\n%s", got)
	}
	if sig := headerValue(got, "X-Smimeproxy-Signature"); !strings.HasPrefix(sig, "valid;") {
		t.Errorf("signature status %q", sig)
	}
}

// TestDemoSubmissionRefusals: the demo's SMTP server takes only demo@example.com, and only after AUTH.
func TestDemoSubmissionRefusals(t *testing.T) {
	d := startDemo(t)
	host, port, _ := net.SplitHostPort(d.SubmissionAddr())
	script := `import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
try:
    s.sendmail('demo@example.com', ['demo@example.com'], 'Subject: x\r\n\r\nx\r\n')
except smtplib.SMTPException as e:
    print('noauth', str(e))
s.login('demo', 'demo')
try:
    s.sendmail('demo@example.com', ['else@example.com'], 'From: demo@example.com\r\nTo: else@example.com\r\nSubject: x\r\n\r\nx\r\n')
except smtplib.SMTPException as e:
    print('else', str(e))
s.quit()
`
	out, err := exec.Command(testenv.LookPath(t, "python3"), "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	// go-smtp answers MAIL before AUTH with 502 5.7.0 (RFC 4954 section 6 has 530 5.7.0).
	if !strings.Contains(string(out), "noauth") || !strings.Contains(string(out), "5.7.0") {
		t.Errorf("sending without AUTH: %s", out)
	}
	if !strings.Contains(string(out), "else") || !strings.Contains(string(out), "550") {
		t.Errorf("sending to another address: %s", out)
	}
}
