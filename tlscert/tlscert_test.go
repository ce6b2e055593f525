package tlscert_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/tlscert"
)

func TestGenerate(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	c, err := tlscert.Generate(tlscert.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	l := c.Leaf
	if l.IsCA || !l.BasicConstraintsValid {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v; want a leaf with explicit cA=false", l.IsCA, l.BasicConstraintsValid)
	}
	if len(l.ExtKeyUsage) != 1 || l.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ExtKeyUsage = %v, want serverAuth only", l.ExtKeyUsage)
	}
	if l.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Error("leaf may sign certificates")
	}
	pub, ok := l.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", l.PublicKey)
	}
	var ips []string
	for _, ip := range l.IPAddresses {
		ips = append(ips, ip.String())
	}
	if strings.Join(ips, ",") != "127.0.0.1,::1" || strings.Join(l.DNSNames, ",") != "localhost" {
		t.Errorf("SANs = %v %v", ips, l.DNSNames)
	}
	if got := l.NotAfter.Sub(now); got != tlscert.DefaultValidity {
		t.Errorf("valid for %v after now, want %v", got, tlscert.DefaultValidity)
	}
	if !l.NotBefore.Before(now) {
		t.Errorf("NotBefore %v not before now", l.NotBefore)
	}
	if l.SerialNumber.Sign() <= 0 {
		t.Error("serial not positive")
	}
	if c.ExpiresWithin(now, 364*24*time.Hour) || !c.ExpiresWithin(now, 366*24*time.Hour) {
		t.Error("ExpiresWithin wrong")
	}
	// Two certificates never share key or serial.
	c2, err := tlscert.Generate(tlscert.Options{Hosts: []string{"imap.internal", "10.0.0.5"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if c2.Leaf.SerialNumber.Cmp(l.SerialNumber) == 0 || string(c2.KeyPEM) == string(c.KeyPEM) {
		t.Error("generated certificates repeat serial or key")
	}
	if c2.Leaf.DNSNames[0] != "imap.internal" || c2.Leaf.IPAddresses[0].String() != "10.0.0.5" {
		t.Errorf("custom SANs = %v %v", c2.Leaf.DNSNames, c2.Leaf.IPAddresses)
	}
	if _, err := tlscert.Generate(tlscert.Options{Hosts: []string{" "}}); err == nil {
		t.Error("Generate(empty host) succeeded")
	}
}

// serveTLS accepts TLS connections on 127.0.0.1 and writes a greeting on each.
func serveTLS(t *testing.T, c *tlscert.Cert) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlscert.ServerConfig(c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				conn.Write([]byte("* OK test\r\n"))
				io.Copy(io.Discard, conn)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestServerConfigGoClient(t *testing.T) {
	c, err := tlscert.Generate(tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, c)
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	for _, name := range []string{"127.0.0.1", "localhost"} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Errorf("verified handshake as %s: %v", name, err)
			continue
		}
		buf := make([]byte, 11)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "* OK test\r\n" {
			t.Errorf("read %q, %v", buf, err)
		}
		if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Errorf("negotiated %x, want TLS 1.3", v)
		}
		conn.Close()
	}
	// Wrong name and untrusted certificate fail verification.
	if conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "example.org"}); err == nil {
		conn.Close()
		t.Error("handshake for example.org verified")
	}
	if conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost"}); err == nil {
		conn.Close()
		t.Error("handshake verified without trusting the certificate")
	}
	// TLS 1.1 is refused (RFC 8996); TLS 1.2 works.
	if conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11}); err == nil {
		conn.Close()
		t.Error("TLS 1.1 handshake succeeded")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	conn.Close()
}

func TestOpenSSLClient(t *testing.T) {
	c, err := tlscert.Generate(tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(certFile, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// openssl's view of the certificate: a leaf, serverAuth, the SANs, and the same fingerprint.
	openssl := testenv.LookPath(t, "openssl")
	out, err := exec.Command(openssl, "x509", "-in", certFile, "-noout", "-text", "-fingerprint", "-sha256").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509: %v\n%s", err, out)
	}
	for _, want := range []string{"CA:FALSE", "TLS Web Server Authentication", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1", "DNS:localhost", "prime256v1", "sha256 Fingerprint=" + c.Fingerprint()} {
		if !strings.Contains(string(out), want) {
			t.Errorf("openssl x509 output lacks %q:\n%s", want, out)
		}
	}
	addr := serveTLS(t, c)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(openssl, "s_client", "-connect", "127.0.0.1:"+port, "-CAfile", certFile,
		"-verify_hostname", "localhost", "-verify_return_error", "-tls1_2", "-brief")
	cmd.Stdin = strings.NewReader("")
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verification: OK") || !strings.Contains(string(out), "* OK test") {
		t.Errorf("openssl s_client: %v\n%s", err, out)
	}
}

func TestLoad(t *testing.T) {
	c, err := tlscert.Generate(tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlscert.Generate(tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cf, kf, kf2 := write("c.pem", c.CertPEM), write("k.pem", c.KeyPEM), write("k2.pem", other.KeyPEM)
	bad := write("bad.pem", []byte("not pem"))

	got, generated, err := tlscert.LoadOrGenerate(cf, kf)
	if err != nil || generated || got.Fingerprint() != c.Fingerprint() {
		t.Fatalf("LoadOrGenerate(files) = %v, %v, %v", got, generated, err)
	}
	if _, generated, err := tlscert.LoadOrGenerate("", ""); err != nil || !generated {
		t.Errorf("LoadOrGenerate(none) generated=%v err=%v", generated, err)
	}
	if _, _, err := tlscert.LoadOrGenerate(cf, ""); err == nil || !strings.Contains(err.Error(), "give both") {
		t.Errorf("LoadOrGenerate(cert only) = %v", err)
	}
	if _, err := tlscert.Load(cf, kf2); !errors.Is(err, tlscert.ErrMismatch) {
		t.Errorf("Load(mismatched) = %v, want ErrMismatch", err)
	}
	for _, files := range [][2]string{{bad, kf}, {cf, bad}, {filepath.Join(dir, "none"), kf}} {
		_, err := tlscert.Load(files[0], files[1])
		if err == nil || !strings.HasPrefix(err.Error(), "tlscert: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("Load(%v) = %v, want a one-line tlscert error", files, err)
		}
		if err != nil && strings.Contains(err.Error(), "PRIVATE KEY-----\n") {
			t.Errorf("error leaks key material: %v", err)
		}
	}
}

func TestCheckListen(t *testing.T) {
	tests := []struct {
		addr    string
		tls     bool
		wantErr bool
	}{
		{"127.0.0.1:1143", false, false},
		{"[::1]:1143", false, false},
		{"localhost:1143", false, false},
		{"0.0.0.0:1143", false, true},
		{":1143", false, true},
		{"192.168.1.5:993", false, true},
		{"192.168.1.5:993", true, false},
		{":993", true, false},
	}
	for _, tt := range tests {
		err := tlscert.CheckListen(tt.addr, tt.tls)
		if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, tlscert.ErrPlaintextRemote)) {
			t.Errorf("CheckListen(%q, %v) = %v, want error %v", tt.addr, tt.tls, err, tt.wantErr)
		}
	}
}

func TestEnsure(t *testing.T) {
	// Nothing stored: generate.
	c, generated, reason, err := tlscert.Ensure(nil, nil, tlscert.Options{})
	if err != nil || !generated || reason != "none stored" {
		t.Fatalf("Ensure(empty) = %v, %v, %q, %v", c, generated, reason, err)
	}
	// A good stored certificate is kept, byte for byte.
	got, generated, _, err := tlscert.Ensure(c.CertPEM, c.KeyPEM, tlscert.Options{})
	if err != nil || generated || string(got.CertPEM) != string(c.CertPEM) {
		t.Errorf("Ensure(stored) generated=%v err=%v", generated, err)
	}
	// Expiring within RenewBefore, mismatched, garbage, or missing a host: replaced, with the reason.
	old, err := tlscert.Generate(tlscert.Options{Validity: 10 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := tlscert.Generate(tlscert.Options{})
	for _, tt := range []struct {
		name       string
		cert, key  []byte
		hosts      []string
		wantReason string
	}{
		{"expiring", old.CertPEM, old.KeyPEM, nil, "stored certificate expires on " + old.Leaf.NotAfter.UTC().Format("2006-01-02")},
		{"mismatched", c.CertPEM, other.KeyPEM, nil, "stored certificate unusable: tlscert: certificate and private key do not match"},
		{"garbage", []byte("x"), []byte("y"), nil, "stored certificate unusable: "},
		{"new host", c.CertPEM, c.KeyPEM, []string{"127.0.0.1", "mail.internal"}, "stored certificate is not valid for mail.internal"},
	} {
		got, generated, reason, err := tlscert.Ensure(tt.cert, tt.key, tlscert.Options{Hosts: tt.hosts})
		if err != nil || !generated || !strings.HasPrefix(reason, tt.wantReason) {
			t.Errorf("%s: Ensure = generated %v, reason %q, err %v; want regenerated, reason %q", tt.name, generated, reason, err, tt.wantReason)
			continue
		}
		if string(got.CertPEM) == string(tt.cert) {
			t.Errorf("%s: certificate not replaced", tt.name)
		}
	}
}
