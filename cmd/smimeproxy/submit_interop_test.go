package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/submit"
)

// Interop of the sending half: mail composed by the submission front end (package submit, through its SMTP
// listener) to certificates of the Thunderbird corpus (NSS-made, ../shared/interop/thunderbird, copied into
// testdata/thunderbird) decrypts with those keys by `smimeproxy decrypt --key <p12>` and by openssl, and
// alice's signature inside verifies with openssl against the corpus CA.

// captureUpstream is an SMTP server that accepts any AUTH PLAIN and keeps every message it receives.
type captureUpstream struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (u *captureUpstream) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &captureSession{u: u}, nil
}

type captureSession struct{ u *captureUpstream }

func (*captureSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (*captureSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(string, string, string) error { return nil }), nil
}
func (*captureSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*captureSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *captureSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.u.mu.Lock()
	s.u.msgs = append(s.u.msgs, b)
	s.u.mu.Unlock()
	return nil
}
func (*captureSession) Reset()        {}
func (*captureSession) Logout() error { return nil }

func (u *captureUpstream) last(t *testing.T) []byte {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.msgs) == 0 {
		t.Fatal("nothing reached the upstream")
	}
	return u.msgs[len(u.msgs)-1]
}

func TestSubmitInteropThunderbirdKeys(t *testing.T) {
	ctx := context.Background()
	up := &captureUpstream{}
	usrv := smtp.NewServer(up)
	usrv.AllowInsecureAuth = true
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go usrv.Serve(uln)
	defer usrv.Close()

	load := func(name string) ([]*x509.Certificate, any) {
		data, err := os.ReadFile(filepath.Join(tbCorpus, name))
		if err != nil {
			t.Fatal(err)
		}
		chain, key, err := keystore.ParseKeyFile(data, []byte("nss"))
		if err != nil {
			t.Fatal(err)
		}
		return chain, key
	}
	keys, book := keystore.NewMemory(), keystore.NewMemoryBook()
	aliceChain, aliceKey := load("Alice.p12")
	if _, err := keys.Put(ctx, "alice", aliceChain, aliceKey, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	bobChain, _ := load("Bob.p12")
	franChain, _ := load("Fran-ec.p12")
	// Bob announced AES-256-GCM (AuthEnvelopedData, RSA key transport); Fran's EC certificate was imported
	// without capabilities (EnvelopedData AES-256-CBC, ECDH key agreement).
	if _, err := book.Add(ctx, "alice", bobChain[0], keystore.AddOptions{Trust: keystore.TrustUser, Capabilities: cms.DefaultCapabilities()}); err != nil {
		t.Fatal(err)
	}
	if _, err := book.Add(ctx, "alice", franChain[0], keystore.AddOptions{Trust: keystore.TrustUser}); err != nil {
		t.Fatal(err)
	}
	srv, err := submit.New(submit.Options{Upstream: "smtp://" + uln.Addr().String(), Keys: keys, Book: book})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	home := t.TempDir()
	vars := map[string]string{"PW": "nss", "HOME": home, "XDG_CONFIG_HOME": home}
	for _, c := range []struct {
		p12, addr, smimeType string
	}{
		{"Bob.p12", keystore.CertAddresses(bobChain[0])[0], "authEnveloped-data"},
		{"Fran-ec.p12", keystore.CertAddresses(franChain[0])[0], "enveloped-data"},
	} {
		t.Run(c.p12, func(t *testing.T) {
			text := "Interop check for " + c.addr + ": composed by smimeproxy's submission front end."
			msg := "From: " + keystore.CertAddresses(aliceChain[0])[0] + "\r\nTo: " + c.addr + "\r\nSubject: interop\r\n\r\n" + text + "\r\n"
			client, err := smtp.Dial(ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if err := client.Auth(sasl.NewPlainClient("", "alice", "pw")); err != nil {
				t.Fatal(err)
			}
			if err := client.SendMail(keystore.CertAddresses(aliceChain[0])[0], []string{c.addr}, strings.NewReader(msg)); err != nil {
				t.Fatalf("send: %v", err)
			}
			client.Quit()
			sent := up.last(t)
			if bytes.Contains(sent, []byte("Interop check")) || !bytes.Contains(sent, []byte("smime-type="+c.smimeType)) {
				t.Fatalf("upstream got no %s ciphertext:\n%.600s", c.smimeType, sent)
			}

			// smimeproxy decrypt with the recipient's PKCS#12 file.
			code, out, errs := runDecryptCLI(t, vars, sent, "decrypt", "--key", filepath.Join(tbCorpus, c.p12), "--password-env", "PW")
			if code != exitOK || !bytes.HasPrefix(out, []byte("X-Smimeproxy-Status: decrypted;")) || !bytes.Contains(out, []byte(text)) {
				t.Fatalf("smimeproxy decrypt --key %s: exit %d, stderr %s\n%.800s", c.p12, code, errs, out)
			}
			if !bytes.Contains(out, []byte("multipart/signed")) {
				t.Errorf("decrypted content is not alice's signed message:\n%.800s", out)
			}

			// openssl: decrypt with the key from the same file, then verify alice's signature to the corpus CA.
			pemPath := filepath.Join(t.TempDir(), "key.pem")
			opensslRun(t, nil, "pkcs12", "-in", filepath.Join(tbCorpus, c.p12), "-passin", "pass:nss", "-nodes", "-out", pemPath)
			inner := opensslRun(t, sent, "cms", "-decrypt", "-inkey", pemPath)
			content := opensslRun(t, inner, "cms", "-verify", "-CAfile", filepath.Join(tbCorpus, "TestCA.pem"), "-purpose", "any")
			if !bytes.Contains(content, []byte(text)) {
				t.Errorf("openssl's verified content lacks the text:\n%s", content)
			}
		})
	}
}

func opensslRun(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(testenv.LookPath(t, "openssl"), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v: %s", args, err, stderr.String())
	}
	return out
}
