package submit_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/submit"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// The submission front end end to end with real components: a real Vault dev server holding alice's key and
// her address book, a real Postfix (the upstream submission server, AUTH checked by Dovecot) delivering by
// LMTP into a real Dovecot, and real clients (Python smtplib, swaks).

const corpus = "../testdata/thunderbird"

type e2e struct {
	t      *testing.T
	d      *testenv.Dovecot
	pf     *testenv.Postfix
	v      *testenv.Vault
	store  *vaultcfg.Store
	listen string
	keys   map[string]identity // by user name: alice, bob, dave
}

type identity struct {
	chain   []*x509.Certificate
	key     any
	pemCert string // files for openssl
	pemKey  string
}

func loadIdentity(t *testing.T, name string) identity {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(corpus, name+".p12"))
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := keystore.ParseKeyFile(data, []byte("nss"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	id := identity{chain: chain, key: key, pemCert: filepath.Join(dir, "cert.pem"), pemKey: filepath.Join(dir, "key.pem")}
	os.WriteFile(id.pemCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw}), 0o600)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(id.pemKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	return id
}

func startE2E(t *testing.T, policy submit.Policy) *e2e {
	t.Helper()
	for _, bin := range []string{"swaks", "python3", "openssl"} {
		testenv.LookPath(t, bin)
	}
	e := &e2e{t: t, keys: map[string]identity{}}
	sockDir, err := os.MkdirTemp("", "smimeproxy-sasl-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sockDir, 0o755)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	lmtp := testenv.FreePort(t)
	sock := filepath.Join(sockDir, "auth")
	e.d = testenv.StartDovecot(t, testenv.DovecotOptions{
		Users: map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"},
		Extra: testenv.DovecotLMTPExtra(lmtp, sock),
	})
	e.pf = testenv.StartPostfix(t, testenv.PostfixOptions{LMTPAddr: fmt.Sprintf("127.0.0.1:%d", lmtp), SASLPath: sock})
	e.v = testenv.StartVault(t)
	ctx := context.Background()
	e.store, err = vaultcfg.Open(ctx, vaultcfg.Config{Addr: e.v.Addr(), Token: e.v.RootToken(), CacheTTL: -1, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.store.Close)
	for user, p12 := range map[string]string{"alice": "Alice", "bob": "Bob", "dave": "Dave"} {
		id := loadIdentity(t, p12)
		e.keys[user] = id
		if _, err := e.store.Put(ctx, user+"@example.com", id.chain, id.key, keystore.PutOptions{}); err != nil {
			t.Fatalf("Put(%s) = %v", user, err)
		}
	}
	// alice's address book: bob announced AES-256-GCM in a signature, dave's certificate was imported (no
	// capabilities known), carol has none.
	book := e.store.Contacts()
	if _, err := book.Add(ctx, "alice@example.com", e.keys["bob"].chain[0], keystore.AddOptions{Trust: keystore.TrustUser, Capabilities: cms.DefaultCapabilities()}); err != nil {
		t.Fatal(err)
	}
	if _, err := book.Add(ctx, "alice@example.com", e.keys["dave"].chain[0], keystore.AddOptions{Trust: keystore.TrustUser}); err != nil {
		t.Fatal(err)
	}
	e.listen = e.startSubmit(submit.Options{Policy: policy})
	return e
}

// startSubmit starts a submission front end (o with the upstream, key store and address book of e filled in)
// and returns its address.
func (e *e2e) startSubmit(o submit.Options) string {
	e.t.Helper()
	o.Upstream, o.Keys, o.Book = "smtp://"+e.pf.Addr(), e.store, e.store.Contacts()
	srv, err := submit.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	go srv.Serve(ln)
	e.t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// pySend sends msg with Python's smtplib (AUTH PLAIN as alice) and returns "" or the refusal "code message".
func (e *e2e) pySend(password string, rcpts []string, msg string) string {
	e.t.Helper()
	return e.pySendVia(e.listen, password, rcpts, msg)
}

// pySendVia is pySend through the submission listener at listen.
func (e *e2e) pySendVia(listen, password string, rcpts []string, msg string) string {
	e.t.Helper()
	host, port, _ := net.SplitHostPort(listen)
	script := `import smtplib, sys
host, port, pw, rcpts, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(","), sys.stdin.buffer.read()
try:
    s = smtplib.SMTP(host, port, timeout=60)
    s.login("alice@example.com", pw)
    s.sendmail("alice@example.com", rcpts, msg)
    s.quit()
except smtplib.SMTPRecipientsRefused as e:
    print(list(e.recipients.values())[0][0], list(e.recipients.values())[0][1].decode())
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
`
	cmd := exec.Command("python3", "-c", script, host, port, password, strings.Join(rcpts, ","))
	cmd.Stdin = strings.NewReader(strings.ReplaceAll(msg, "\n", "\r\n"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("python smtplib: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// inbox returns the messages in user's INBOX maildir (new and cur), oldest first by name.
func (e *e2e) inbox(user string) [][]byte {
	var out [][]byte
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(e.d.MaildirPath(user), sub, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err == nil {
				out = append(out, crlf(b))
			}
		}
	}
	return out
}

// waitInbox waits until user's INBOX has n messages and returns the newest.
func (e *e2e) waitInbox(user string, n int) []byte {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msgs := e.inbox(user)
		if len(msgs) >= n {
			newest, newestTime := msgs[0], time.Time{}
			for _, sub := range []string{"new", "cur"} {
				files, _ := filepath.Glob(filepath.Join(e.d.MaildirPath(user), sub, "*"))
				for _, f := range files {
					if st, err := os.Stat(f); err == nil && !st.ModTime().Before(newestTime) {
						newestTime = st.ModTime()
						b, _ := os.ReadFile(f)
						newest = crlf(b)
					}
				}
			}
			return newest
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s's inbox has %d messages, want %d", user, len(msgs), n)
		}
		e.pf.Flush()
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *e2e) ring(user string) *ring { return &ring{id: e.keys[user]} }

type ring struct{ id identity }

func (r *ring) KeysFor(context.Context, []cms.RecipientID) ([]smime.Key, error) {
	return []smime.Key{{Cert: r.id.chain[0], Private: r.id.key}}, nil
}

func (e *e2e) roots() *x509.CertPool {
	b, _ := os.ReadFile(filepath.Join(corpus, "TestCA.pem"))
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p
}

// recipientsOf returns the RecipientIDs of a stored application/pkcs7-mime message.
func recipientsOf(t *testing.T, msg []byte) []cms.RecipientID {
	t.Helper()
	i := bytes.Index(msg, []byte("\r\n\r\n"))
	der, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(msg[i+4:])))
	if err != nil {
		t.Fatalf("body not base64: %v", err)
	}
	ids, err := cms.PeekRecipients(der)
	if err != nil {
		t.Fatalf("PeekRecipients() = %v", err)
	}
	return ids
}

func names(ids []cms.RecipientID, ids2 map[string]identity) []string {
	var out []string
	for _, id := range ids {
		for n, k := range ids2 {
			if id.Matches(k.chain[0]) {
				out = append(out, n)
			}
		}
	}
	return out
}

func openssl(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v: %s", args, err, stderr.String())
	}
	return out
}

func TestSubmitE2E(t *testing.T) {
	e := startE2E(t, submit.Policy{})
	secret := "The launch code is 0000."

	t.Run("signed and encrypted, Bcc separate (smtplib)", func(t *testing.T) {
		msg := "From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\nBcc: dave@example.com\nSubject: plans\n" +
			"Message-ID: <1@example.com>\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + secret + "\nGrüße\n"
		if r := e.pySend("alice-pw", []string{"bob@example.com", "dave@example.com"}, msg); r != "" {
			t.Fatalf("send: %s", r)
		}
		bob := e.waitInbox("bob", 1)
		dave := e.waitInbox("dave", 1)
		for who, m := range map[string][]byte{"bob": bob, "dave": dave} {
			if bytes.Contains(m, []byte("launch code")) || bytes.Contains(m, []byte("Bcc:")) {
				t.Errorf("%s's stored copy shows the plaintext or a Bcc field:\n%s", who, m)
			}
			if !bytes.Contains(m, []byte("Content-Type: application/pkcs7-mime")) || !bytes.Contains(m, []byte("Subject: plans")) {
				t.Errorf("%s's stored copy is not S/MIME-encrypted with the subject outside:\n%.600s", who, m)
			}
		}
		// bob announced GCM; dave's capabilities are unknown: CBC.
		if !bytes.Contains(bob, []byte("smime-type=authEnveloped-data")) || !bytes.Contains(dave, []byte("smime-type=enveloped-data")) {
			t.Errorf("content encryption: bob's %q, dave's %q", smimeTypeOf(bob), smimeTypeOf(dave))
		}
		if got := names(recipientsOf(t, bob), e.keys); strings.Join(sorted(got), ",") != "alice,bob" {
			t.Errorf("bob's copy is for %v, want alice and bob (never dave)", got)
		}
		if got := names(recipientsOf(t, dave), e.keys); strings.Join(sorted(got), ",") != "alice,dave" {
			t.Errorf("dave's copy is for %v, want alice and dave", got)
		}
		// bob reads it with his key: decrypted, with a valid signature by alice.
		res := smime.Process(context.Background(), bob, e.ring("bob"), nil)
		if res.Status != smime.Decrypted || !bytes.Contains(res.Served, []byte("launch code")) {
			t.Fatalf("bob: Process() = %v %s", res.Status, res.Reason)
		}
		if sig := smime.Verify(res.Served, &smime.VerifyOptions{Roots: e.roots()}); sig == nil || !sig.Valid || sig.Signer != "alice@example.com" {
			t.Errorf("bob: signature %+v", sig)
		}
		// alice's own key decrypts her copy too; dave's key his.
		if r := smime.Process(context.Background(), bob, e.ring("alice"), nil); r.Status != smime.Decrypted {
			t.Errorf("alice's key on bob's copy: %v %s", r.Status, r.Reason)
		}
		if r := smime.Process(context.Background(), dave, e.ring("dave"), nil); r.Status != smime.Decrypted || !bytes.Contains(r.Served, []byte("launch code")) {
			t.Errorf("dave: %v %s", r.Status, r.Reason)
		}
		if r := smime.Process(context.Background(), bob, e.ring("dave"), nil); r.Status == smime.Decrypted {
			t.Error("dave's key decrypts bob's copy")
		}
		// OpenSSL reads the raw stored message: decrypt with bob's key, then verify alice's signature.
		inner := openssl(t, bob, "cms", "-decrypt", "-recip", e.keys["bob"].pemCert, "-inkey", e.keys["bob"].pemKey)
		openssl(t, inner, "cms", "-verify", "-CAfile", filepath.Join(corpus, "TestCA.pem"), "-purpose", "any", "-out", os.DevNull)
		openssl(t, dave, "cms", "-decrypt", "-recip", e.keys["alice"].pemCert, "-inkey", e.keys["alice"].pemKey)
	})

	t.Run("subject tag removed (swaks, AUTH LOGIN)", func(t *testing.T) {
		n := len(e.inbox("bob"))
		out, err := exec.Command("swaks", "--server", e.listen, "--auth", "LOGIN", "--auth-user", "alice@example.com",
			"--auth-password", "alice-pw", "--from", "alice@example.com", "--to", "bob@example.com",
			"--header", "Subject: [nosign] lunch?", "--header", "From: alice@example.com", "--body", "At noon. "+secret).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		m := e.waitInbox("bob", n+1)
		if !bytes.Contains(m, []byte("Subject: lunch?\r\n")) || bytes.Contains(m, []byte("[nosign]")) {
			t.Errorf("tag not removed:\n%.500s", m)
		}
		res := smime.Process(context.Background(), m, e.ring("bob"), nil)
		if res.Status != smime.Decrypted || smime.Verify(res.Served, nil) != nil {
			t.Errorf("[nosign]: want encrypted and unsigned, got %v, signature layer %v", res.Status, smime.Verify(res.Served, nil) != nil)
		}
	})

	t.Run("if-possible: a recipient without certificate gets signed mail", func(t *testing.T) {
		nb, nc := len(e.inbox("bob")), len(e.inbox("carol"))
		msg := "From: alice@example.com\nTo: bob@example.com, carol@example.com\nSubject: hello both\n\nHi. " + secret + "\n"
		if r := e.pySend("alice-pw", []string{"bob@example.com", "carol@example.com"}, msg); r != "" {
			t.Fatalf("send: %s", r)
		}
		for _, m := range [][]byte{e.waitInbox("bob", nb+1), e.waitInbox("carol", nc+1)} {
			if !bytes.Contains(m, []byte("multipart/signed")) || bytes.Contains(m, []byte("pkcs7-mime")) {
				t.Errorf("want signed only:\n%.500s", m)
			}
			if sig := smime.Verify(m, &smime.VerifyOptions{Roots: e.roots()}); sig == nil || !sig.Valid {
				t.Errorf("signature after Postfix and Dovecot: %+v", sig)
			}
		}
	})

	t.Run("[encrypt] with a recipient without certificate: 550, nothing upstream", func(t *testing.T) {
		nb, nc := len(e.inbox("bob")), len(e.inbox("carol"))
		before := strings.Count(e.pf.Log(), "from=<alice@example.com>")
		msg := "From: alice@example.com\nTo: bob@example.com, carol@example.com\nSubject: [encrypt] secret\n\n" + secret + "\n"
		r := e.pySend("alice-pw", []string{"bob@example.com", "carol@example.com"}, msg)
		if !strings.HasPrefix(r, "550 ") || !strings.Contains(r, "carol@example.com") || strings.Contains(r, "bob@example.com") {
			t.Errorf("send = %q, want 550 naming carol only", r)
		}
		time.Sleep(time.Second)
		e.pf.Flush()
		if len(e.inbox("bob")) != nb || len(e.inbox("carol")) != nc {
			t.Error("a refused message was delivered")
		}
		if after := strings.Count(e.pf.Log(), "from=<alice@example.com>"); after != before {
			t.Errorf("postfix saw %d new transactions from alice, want 0", after-before)
		}
	})

	t.Run("wrong password: the upstream's 535 is relayed", func(t *testing.T) {
		r := e.pySend("wrong", []string{"bob@example.com"}, "Subject: x\n\nx\n")
		if !strings.HasPrefix(r, "535 ") {
			t.Errorf("send with a wrong password = %q, want 535", r)
		}
	})

	t.Run("doctor probe", func(t *testing.T) {
		if err := submit.Probe(submit.Options{Upstream: "smtp://" + e.pf.Addr()}); err != nil {
			t.Errorf("Probe(postfix) = %v", err)
		}
		if err := submit.Probe(submit.Options{Upstream: "smtp://127.0.0.1:1"}); err == nil {
			t.Error("Probe(closed port) = nil")
		}
	})

	t.Run("vault down: 451", func(t *testing.T) {
		e.v.Stop()
		defer e.v.Restart()
		r := e.pySend("alice-pw", []string{"bob@example.com"}, "From: alice@example.com\nTo: bob@example.com\nSubject: x\n\nx\n")
		if !strings.HasPrefix(r, "451 ") {
			t.Errorf("send with Vault down = %q, want 451", r)
		}
	})
}

// crlf gives a maildir file (LF line ends, as Dovecot stores mail) the CRLF line ends IMAP serves.
func crlf(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

func smimeTypeOf(m []byte) string {
	i := bytes.Index(m, []byte("smime-type="))
	if i < 0 {
		return ""
	}
	j := bytes.IndexAny(m[i:], ";\r\n")
	return string(m[i : i+j])
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
