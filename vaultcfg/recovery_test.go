package vaultcfg_test

//lint:file-ignore SA1019 tests build RSA PKCS #1 v1.5 key transport, what most S/MIME senders use (RFC 8551 section 2.3)

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// TestVaultDownAndRecovery cuts the connection to Vault: cached KV keys keep decrypting, everything needing
// Vault fails with a clear ErrUnreachable, and all works again once Vault is back.
func TestVaultDownAndRecovery(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := e.config(e.v.RootToken())
	cfg.Timeout = 5 * time.Second
	cfg.CacheTTL = 50 * time.Millisecond // so that lookups below go to Vault and fall back to the stale cache
	s := e.open(cfg)
	key := rsaKey(t, 2)
	e.addKey(key)
	cert := newCert(t, key, "carol@example.com", time.Now().Add(-time.Hour))
	if _, err := s.Put(ctx, "carol", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	tkey := rsaKey(t, 3)
	e.addKey(tkey)
	tcert := newCert(t, tkey, "carol@example.com", time.Now().Add(-time.Hour))
	if _, err := s.Put(ctx, "carol", []*x509.Certificate{tcert}, tkey, keystore.PutOptions{Transit: true}); err != nil {
		t.Fatal(err)
	}
	if keys, err := s.Lookup(ctx, "carol", cms.RecipientIDsOf(cert)); err != nil || len(keys) != 1 {
		t.Fatalf("Lookup() = %v, %v", keys, err)
	}
	tkeys, err := s.Lookup(ctx, "carol", cms.RecipientIDsOf(tcert))
	if err != nil || len(tkeys) != 1 {
		t.Fatalf("Lookup(transit) = %v, %v", tkeys, err)
	}

	e.v.Stop()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	_, err = s.List(ctx, "carol")
	if !errors.Is(err, vaultcfg.ErrUnreachable) || !strings.Contains(err.Error(), "unreachable") || strings.Contains(err.Error(), "\n") {
		t.Errorf("List() with vault down = %v, want a one-line ErrUnreachable", err)
	}
	if d := time.Since(start); d > cfg.Timeout {
		t.Errorf("List() with vault down took %v, want < %v", d, cfg.Timeout)
	}
	// The cached KV key still answers and decrypts.
	keys, err := s.Lookup(ctx, "carol", cms.RecipientIDsOf(cert))
	if err != nil || len(keys) != 1 {
		t.Fatalf("Lookup(cached) with vault down = %v, %v", keys, err)
	}
	cek := []byte("0123456789abcdef")
	ct, _ := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, cek)
	if got, err := keys[0].Private.(crypto.Decrypter).Decrypt(rand.Reader, ct, nil); err != nil || !bytes.Equal(got, cek) {
		t.Errorf("cached key Decrypt() = %x, %v", got, err)
	}
	// A Transit decryption needs Vault: a clear error, not a random key, even with SessionKeyLen.
	tct, _ := rsa.EncryptPKCS1v15(rand.Reader, &tkey.PublicKey, cek)
	_, err = tkeys[0].Private.(crypto.Decrypter).Decrypt(rand.Reader, tct, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: 16})
	if !errors.Is(err, vaultcfg.ErrUnreachable) {
		t.Errorf("Transit Decrypt() with vault down = %v, want ErrUnreachable", err)
	}
	// Another user (nothing cached) gets the error.
	if _, err := s.Lookup(ctx, "dave", cms.RecipientIDsOf(cert)); !errors.Is(err, vaultcfg.ErrUnreachable) {
		t.Errorf("Lookup(uncached user) with vault down = %v, want ErrUnreachable", err)
	}
	if !strings.Contains(e.log.String(), "using cached keys") {
		t.Errorf("no log line about serving cached keys:\n%s", e.log)
	}

	e.v.Restart()
	if l, err := s.List(ctx, "carol"); err != nil || len(l) != 2 {
		t.Errorf("List() after recovery = %v, %v", l, err)
	}
	got, err := tkeys[0].Private.(crypto.Decrypter).Decrypt(rand.Reader, tct, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: 16})
	if err != nil || !bytes.Equal(got, cek) {
		t.Errorf("Transit Decrypt() after recovery = %x, %v", got, err)
	}
}

// TestOpenWhileDown: opening the store while Vault is down is a clear error.
func TestOpenWhileDown(t *testing.T) {
	e := newEnv(t)
	e.v.Stop()
	_, err := vaultcfg.Open(context.Background(), e.config(e.v.RootToken()))
	if !errors.Is(err, vaultcfg.ErrUnreachable) || !strings.Contains(err.Error(), e.v.Addr()) {
		t.Errorf("Open() with vault down = %v, want ErrUnreachable naming the address", err)
	}
}

// TestAppRole logs in with AppRole (secret id from a file) using tokens that live 3 s and at most 7 s: the
// LifetimeWatcher must renew them and, at the maximum TTL, the store must log in again, so calls keep working
// well past both.
func TestAppRole(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v := e.v
	v.MustRequest("PUT", "sys/policy/smimeproxy", `{"policy":"path \"secret/data/smimeproxy/*\" { capabilities = [\"create\",\"read\",\"update\"] }\npath \"secret/metadata/smimeproxy/*\" { capabilities = [\"list\",\"read\",\"delete\"] }\npath \"transit/decrypt/smimeproxy-*\" { capabilities = [\"update\"] }"}`)
	v.MustRequest("POST", "sys/auth/approle", `{"type":"approle"}`)
	v.MustRequest("POST", "auth/approle/role/proxy", `{"token_policies":["smimeproxy"],"token_ttl":"3s","token_max_ttl":"7s"}`)
	var rid struct {
		Data struct {
			RoleID string `json:"role_id"`
		} `json:"data"`
	}
	json.Unmarshal(v.MustRequest("GET", "auth/approle/role/proxy/role-id", ""), &rid)
	var sid struct {
		Data struct {
			SecretID string `json:"secret_id"`
		} `json:"data"`
	}
	json.Unmarshal(v.MustRequest("POST", "auth/approle/role/proxy/secret-id", "{}"), &sid)
	e.secrets = append(e.secrets, sid.Data.SecretID)
	f := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(f, []byte(sid.Data.SecretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("bad secret id", func(t *testing.T) {
		_, err := vaultcfg.Open(ctx, vaultcfg.Config{Addr: v.Addr(), AppRole: &vaultcfg.AppRole{RoleID: rid.Data.RoleID, SecretID: "wrong"}})
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "approle") {
			t.Errorf("Open(bad secret id) = %v, want a one-line approle error", err)
		}
	})

	cfg := vaultcfg.Config{Addr: v.Addr(), AppRole: &vaultcfg.AppRole{RoleID: rid.Data.RoleID, SecretIDFile: f}, Logger: e.logger}
	s := e.open(cfg)
	key := rsaKey(t, 0)
	e.addKey(key)
	cert := newCert(t, key, "erin@example.com", time.Now().Add(-time.Hour))
	if _, err := s.Put(ctx, "erin", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatalf("Put() with approle token = %v", err)
	}
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		if l, err := s.List(ctx, "erin"); err != nil || len(l) != 1 {
			t.Fatalf("List() at %v = %v, %v", time.Until(deadline), l, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// A revoked token (as after a Vault outage longer than its TTL) is replaced on the next call.
	var acc struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	json.Unmarshal(v.MustRequest("LIST", "auth/token/accessors", ""), &acc)
	var self struct {
		Data struct {
			Accessor string `json:"accessor"`
		} `json:"data"`
	}
	json.Unmarshal(v.MustRequest("GET", "auth/token/lookup-self", ""), &self)
	for _, a := range acc.Data.Keys {
		if a != self.Data.Accessor {
			v.MustRequest("POST", "auth/token/revoke-accessor", `{"accessor":"`+a+`"}`)
		}
	}
	if l, err := s.List(ctx, "erin"); err != nil || len(l) != 1 {
		t.Errorf("List() after the token was revoked = %v, %v; want a re-login", l, err)
	}
	logs := e.log.String()
	if n := strings.Count(logs, "vault token renewed"); n < 1 {
		t.Errorf("token renewed %d times, want >= 1:\n%s", n, logs)
	}
	if n := strings.Count(logs, `msg="vault login"`); n < 2 {
		t.Errorf("%d approle logins, want >= 2 (re-login after max TTL):\n%s", n, logs)
	}
}

// TestPeriodicTokenRenewed: a renewable user token (here periodic, 2 s) given as the token is renewed by the
// Store, so calls keep working well past its period.
func TestPeriodicTokenRenewed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.v.MustRequest("PUT", "sys/policy/smimeproxy-list", `{"policy":"path \"secret/metadata/smimeproxy/*\" { capabilities = [\"list\"] }"}`)
	var tok struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	json.Unmarshal(e.v.MustRequest("POST", "auth/token/create", `{"policies":["smimeproxy-list"],"period":"2s"}`), &tok)
	e.secrets = append(e.secrets, tok.Auth.ClientToken)
	s := e.open(e.config(tok.Auth.ClientToken))
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		if _, err := s.List(ctx, "nobody"); err != nil && !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("List() %v after the store opened = %v", time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Without renewal the token is gone after its period: check that the test could fail.
	json.Unmarshal(e.v.MustRequest("POST", "auth/token/create", `{"policies":["smimeproxy-list"],"period":"2s"}`), &tok)
	e.secrets = append(e.secrets, tok.Auth.ClientToken)
	time.Sleep(3 * time.Second)
	if _, err := vaultcfg.Open(ctx, e.config(tok.Auth.ClientToken)); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("an unrenewed 2 s token after 3 s: Open() = %v, want ErrPermissionDenied", err)
	}
}
