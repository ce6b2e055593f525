package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/tlscert"
)

func TestTLSFlags(t *testing.T) {
	newFlags := func(args ...string) *tlsFlags {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		f := addTLSFlags(fs)
		env, _, stderr := testEnv(nil)
		if err := parseFlags(fs, env, args); err != nil {
			t.Fatalf("parseFlags: %v %s", err, stderr)
		}
		return f
	}
	// Loopback without files: plaintext with STARTTLS offered, on a generated certificate.
	f := newFlags()
	conf, cert, generated, err := f.serverConfig("127.0.0.1:1143")
	if err != nil || conf == nil || cert == nil || !generated || f.mode("127.0.0.1:1143") != tlsStartTLS ||
		f.startTLSConfig("127.0.0.1:1143", conf) != conf {
		t.Errorf("loopback: %v %v %v %v", conf, cert, f.mode("127.0.0.1:1143"), err)
	}
	// --starttls=false: plaintext only, no certificate.
	f = newFlags("--starttls=false")
	conf, cert, _, err = f.serverConfig("127.0.0.1:1143")
	if err != nil || conf != nil || cert != nil || f.mode("127.0.0.1:1143") != tlsNone {
		t.Errorf("loopback, --starttls=false: %v %v %v", conf, cert, err)
	}
	// --tls on loopback, and any other address: implicit TLS, never STARTTLS.
	if m := newFlags("--tls").mode("127.0.0.1:1143"); m != tlsImplicit {
		t.Errorf("--tls on loopback: %v", m)
	}
	if f := newFlags(); f.mode("0.0.0.0:1143") != tlsImplicit || f.startTLSConfig("0.0.0.0:1143", &tls.Config{}) != nil {
		t.Errorf("non-loopback: %v", f.mode("0.0.0.0:1143"))
	}
	// Elsewhere without files: a generated leaf for the loopback names.
	conf, cert, generated, err = newFlags().serverConfig("0.0.0.0:1143")
	if err != nil || conf == nil || !generated || conf.MinVersion != tls.VersionTLS12 || cert.Leaf.IsCA {
		t.Fatalf("non-loopback: %v %v %v %v", conf, cert, generated, err)
	}
	// Files: loaded (also on loopback), and a real TLS handshake verifies against them.
	dir := t.TempDir()
	c, err := tlscert.Generate(tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cf := writeFile(t, filepath.Join(dir, "c.pem"), string(c.CertPEM))
	kf := writeFile(t, filepath.Join(dir, "k.pem"), string(c.KeyPEM))
	conf, cert, generated, err = newFlags("--tls-cert", cf, "--tls-key", kf).serverConfig("127.0.0.1:0")
	if err != nil || generated || cert.Fingerprint() != c.Fingerprint() {
		t.Fatalf("files: %v %v %v", cert, generated, err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if s, err := ln.Accept(); err == nil {
			s.(*tls.Conn).Handshake()
			s.Close()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	cl, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	cl.Close()
	// Only one of the two files: an error.
	if _, _, _, err := newFlags("--tls-cert", cf).serverConfig("0.0.0.0:1"); err == nil || !strings.Contains(err.Error(), "give both") {
		t.Errorf("cert only: %v", err)
	}
	// From the environment, like any flag.
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f = addTLSFlags(fs)
	env, _, _ := testEnv(map[string]string{"SMIMEPROXY_TLS_CERT": cf, "SMIMEPROXY_TLS_KEY": kf})
	if err := parseFlags(fs, env, nil); err != nil || f.cert != cf || f.key != kf {
		t.Errorf("env: %v %+v", err, f)
	}
}
