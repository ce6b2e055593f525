package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/tlscert"
)

func TestKeyUserTemplate(t *testing.T) {
	for _, tt := range []struct {
		tmpl, login, want string
	}{
		{"{user}", "bob@example.com", "bob@example.com"},
		{"{localpart}", "bob@example.com", "bob"},
		{"{domain}-{localpart}", "bob@example.com", "example.com-bob"},
		{"{localpart}", "bob", "bob"},
		{"{localpart}", "a@b@example.com", "a@b"},
		{"keys-{user}", "bob", "keys-bob"},
		{"alice", "anyone", "alice"}, // one key set for every login: a single-user workstation
	} {
		f, err := parseKeyUserTemplate(tt.tmpl)
		if err != nil {
			t.Fatalf("%q: %v", tt.tmpl, err)
		}
		got := tt.login
		if f != nil {
			got = f(tt.login)
		}
		if got != tt.want {
			t.Errorf("%q(%q) = %q, want %q", tt.tmpl, tt.login, got, tt.want)
		}
	}
	for _, bad := range []string{"", " ", "{usr}", "{user", "x{}"} {
		if _, err := parseKeyUserTemplate(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512": 512, "64KiB": 64 << 10, "256MiB": 256 << 20, "1GiB": 1 << 30,
		"100MB": 100e6, "5 kB": 5000, "7B": 7} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5MiB", "MiB", "12XB", "99999999999GiB"} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) = %d, want an error", bad, b)
		}
	}
	if byteSize(0).cache() >= 0 {
		t.Error("--cache-bytes 0 must disable the cache")
	}
}

// TestServeClientCertInVault: for a non-loopback listener without --tls-cert, the generated client-facing
// certificate is stored in Vault and the same one is used after a restart (clients trust it once); a
// certificate that no longer covers the listen host is replaced.
func TestServeClientCertInVault(t *testing.T) {
	k := newKeysEnv(t)
	store := k.store()
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	start := func(listen string) *tlscert.Cert {
		t.Helper()
		_, sf := newServeFlagSet()
		sf.listen = listen // not bound: clientTLS only reads the host
		conf, cert, _, err := sf.clientTLS(ctx, store, logger)
		if err != nil || conf == nil || cert == nil {
			t.Fatalf("clientTLS(%s) = %v, %v, %v", listen, conf, cert, err)
		}
		return cert
	}
	first := start("192.0.2.10:1143")
	if err := first.Leaf.VerifyHostname("192.0.2.10"); err != nil {
		t.Errorf("certificate does not cover the listen address: %v", err)
	}
	if first.Leaf.IsCA {
		t.Error("generated certificate is a CA")
	}
	certPEM, keyPEM, err := store.ReadTLSCert(ctx, "192.0.2.10")
	if err != nil || !bytes.Equal(certPEM, first.CertPEM) || len(keyPEM) == 0 {
		t.Fatalf("stored certificate = %d bytes (same: %v), key %d bytes, %v", len(certPEM), bytes.Equal(certPEM, first.CertPEM), len(keyPEM), err)
	}
	if again := start("192.0.2.10:1143"); again.Fingerprint() != first.Fingerprint() {
		t.Error("restart generated a new certificate instead of reusing the stored one")
	}
	if other := start("192.0.2.11:1143"); other.Fingerprint() == first.Fingerprint() {
		t.Error("another listen host got the first host's certificate")
	}
	// a stored certificate that does not cover the host is replaced and the replacement stored
	if err := store.WriteTLSCert(ctx, "192.0.2.10", certPEM[:len(certPEM)/2], keyPEM); err != nil {
		t.Fatal(err)
	}
	if fixed := start("192.0.2.10:1143"); fixed.Fingerprint() == first.Fingerprint() {
		t.Error("unusable stored certificate was not replaced")
	}
	// a loopback listener without files offers STARTTLS with a certificate kept in Vault (so 'tls export' and
	// the mail client see the same one); with --starttls=false it stays plaintext and stores nothing
	lo := start("127.0.0.1:1143")
	if stored, _, err := store.ReadTLSCert(ctx, "127.0.0.1"); err != nil || !bytes.Equal(stored, lo.CertPEM) {
		t.Errorf("loopback STARTTLS certificate not stored in Vault: %v", err)
	}
	_, sf := newServeFlagSet()
	sf.listen, sf.tls.starttls = "[::1]:1143", false
	if conf, _, _, err := sf.clientTLS(ctx, store, logger); conf != nil || err != nil {
		t.Errorf("loopback, --starttls=false: TLS %v, %v", conf != nil, err)
	}
	if stored, _, err := store.ReadTLSCert(ctx, "::1"); err != nil || len(stored) != 0 {
		t.Errorf("loopback, --starttls=false: stored %d bytes, %v", len(stored), err)
	}
}

// TestServeTLSOnLoopback: --tls makes serve speak implicit TLS on a loopback address with a certificate it
// generates and keeps in Vault; a client that trusts that certificate (and nothing else) logs in through it,
// and /healthz reports ready with Vault and the upstream checked.
func TestServeTLSOnLoopback(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	k := newKeysEnv(t)
	env, _, stderr := testEnv(map[string]string{"HOME": t.TempDir(), "VAULT_ADDR": k.v.Addr(), "VAULT_TOKEN": k.v.RootToken()})
	metricsAddr := freeLoopback(t)
	p := startServe(t, env, stderr, "--tls", "--listen", "127.0.0.1:0", "--upstream", "imaps://"+d.TLSAddr(),
		"--upstream-ca-file", d.CAFile(), "--log-level", "warn", "--metrics-listen", metricsAddr)
	addr, ctx := p.addr, context.Background()
	certPEM, _, err := k.store().ReadTLSCert(ctx, "127.0.0.1")
	if err != nil || len(certPEM) == 0 {
		t.Fatalf("no certificate stored in Vault for 127.0.0.1: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	c, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}})
	if err != nil {
		t.Fatalf("TLS to the proxy with its stored certificate: %v", err)
	}
	defer c.Close()
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	if plain, err := imapclient.DialInsecure(addr, nil); err == nil {
		if err := plain.Login("alice", "alice-pw").Wait(); err == nil {
			t.Error("plaintext login worked on a --tls listener")
		}
		plain.Close()
	}
	if body := httpGet(t, "http://"+metricsAddr+"/healthz"); !strings.Contains(body, "ready") || !strings.Contains(body, "vault: ok") || !strings.Contains(body, "upstream: ok") {
		t.Errorf("/healthz = %q", body)
	}
	p.stop()
}
