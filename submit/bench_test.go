package submit_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/submit"
)

// The cost of one 100 KB message signed (RSA-2048, alice) and encrypted (to bob and alice): through the
// submission listener (a real SMTP client, an in-process go-smtp upstream that accepts and discards: the
// benchmark measures the proxy, not a mail server), the crypto alone (the floor), and `openssl cms -sign |
// openssl cms -encrypt` as processes.

type sink struct{}

func (sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{}, nil }

type sinkSession struct{}

func (*sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (*sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(string, string, string) error { return nil }), nil
}
func (*sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (*sinkSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
func (*sinkSession) Reset()                               {}
func (*sinkSession) Logout() error                        { return nil }

func benchMessage() []byte {
	var b bytes.Buffer
	b.WriteString("From: alice@example.com\r\nTo: bob@example.com\r\nSubject: bench\r\nContent-Type: text/plain\r\n\r\n")
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n"
	for b.Len() < 100<<10 {
		b.WriteString(line)
	}
	return b.Bytes()
}

func BenchmarkSubmit100KB(b *testing.B) {
	alice, bob := benchIdentity(b, "Alice"), benchIdentity(b, "Bob")
	msg := benchMessage()
	b.Run("listener", func(b *testing.B) {
		up := smtp.NewServer(sink{})
		up.AllowInsecureAuth = true
		uln, _ := net.Listen("tcp", "127.0.0.1:0")
		go up.Serve(uln)
		defer up.Close()
		keys := keystore.NewMemory()
		ctx := context.Background()
		if _, err := keys.Put(ctx, "alice@example.com", alice.chain, alice.key, keystore.PutOptions{}); err != nil {
			b.Fatal(err)
		}
		book := keystore.NewMemoryBook()
		book.Add(ctx, "alice@example.com", bob.chain[0], keystore.AddOptions{Trust: keystore.TrustUser})
		srv, err := submit.New(submit.Options{Upstream: "smtp://" + uln.Addr().String(), Keys: keys, Book: book})
		if err != nil {
			b.Fatal(err)
		}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		go srv.Serve(ln)
		defer srv.Close()
		c, err := smtp.Dial(ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", "pw")); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(msg)))
		b.ResetTimer()
		for b.Loop() {
			if err := c.SendMail("alice@example.com", []string{"bob@example.com"}, bytes.NewReader(msg)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("crypto-floor", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			s, err := smime.Sign(msg, alice.key.(crypto.Signer), alice.chain, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := smime.Encrypt(s, []*x509.Certificate{bob.chain[0], alice.chain[0]}, &cms.EncryptOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("openssl-processes", func(b *testing.B) {
		testenv.LookPath(b, "openssl")
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			sign := exec.Command("openssl", "cms", "-sign", "-signer", alice.pemCert, "-inkey", alice.pemKey, "-md", "sha256")
			sign.Stdin = bytes.NewReader(msg)
			signed, err := sign.Output()
			if err != nil {
				b.Fatal(err)
			}
			enc := exec.Command("openssl", "cms", "-encrypt", "-aes256", bob.pemCert, alice.pemCert)
			enc.Stdin = bytes.NewReader(signed)
			if _, err := enc.Output(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func benchIdentity(b *testing.B, name string) identity {
	data, err := os.ReadFile(filepath.Join(corpus, name+".p12"))
	if err != nil {
		b.Fatal(err)
	}
	chain, key, err := keystore.ParseKeyFile(data, []byte("nss"))
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	id := identity{chain: chain, key: key, pemCert: filepath.Join(dir, "cert.pem"), pemKey: filepath.Join(dir, "key.pem")}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(id.pemCert, pemBlock("CERTIFICATE", chain[0].Raw), 0o600)
	os.WriteFile(id.pemKey, pemBlock("PRIVATE KEY", der), 0o600)
	return id
}

// capture is an upstream that keeps the last message.
type capture struct{ last chan []byte }

func (c capture) NewSession(*smtp.Conn) (smtp.Session, error) { return &captureSession{c: c}, nil }

type captureSession struct {
	sinkSession
	c capture
}

func (s *captureSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.c.last <- b
	return err
}

// TestSignerByLegacyEmailAttribute: a key whose certificate names its address only in the subject's
// emailAddress attribute (NSS-made, like Alice.p12; the memory store's entry lists no Emails) still signs.
func TestSignerByLegacyEmailAttribute(t *testing.T) {
	alice := loadIdentity(t, "Alice")
	c := capture{last: make(chan []byte, 1)}
	up := smtp.NewServer(c)
	up.AllowInsecureAuth = true
	uln, _ := net.Listen("tcp", "127.0.0.1:0")
	go up.Serve(uln)
	defer up.Close()
	keys := keystore.NewMemory()
	if _, err := keys.Put(context.Background(), "alice@example.com", alice.chain, alice.key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	srv, err := submit.New(submit.Options{Upstream: "smtp://" + uln.Addr().String(), Keys: keys, Book: keystore.NewMemoryBook()})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()
	cl, err := smtp.Dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Auth(sasl.NewPlainClient("", "alice@example.com", "pw")); err != nil {
		t.Fatal(err)
	}
	if err := cl.SendMail("alice@example.com", []string{"carol@example.com"}, strings.NewReader("From: alice@example.com\r\nSubject: hi\r\n\r\nhi\r\n")); err != nil {
		t.Fatalf("SendMail() = %v", err)
	}
	got := <-c.last
	if sig := smime.Verify(got, nil); sig == nil || sig.Cert == nil || !sig.Cert.Equal(alice.chain[0]) {
		t.Errorf("upstream got no signature by alice:\n%.400s", got)
	}
}
