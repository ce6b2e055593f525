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
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// TestPolicies: a token with AdminPolicy can import (KV and Transit), list and remove; a token with
// ProxyPolicy can look keys up and decrypt through Transit but cannot write keys; it may write its own state
// and the users' address books.
func TestPolicies(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cfg := vaultcfg.Config{Prefix: "mail/smime"} // a nested prefix, to check the policy paths
	token := func(name, policy string) string {
		body, _ := json.Marshal(map[string]string{"policy": policy})
		e.v.MustRequest("PUT", "sys/policy/"+name, string(body))
		var tok struct {
			Auth struct {
				ClientToken string `json:"client_token"`
			} `json:"auth"`
		}
		json.Unmarshal(e.v.MustRequest("POST", "auth/token/create", `{"policies":["`+name+`"],"no_default_policy":false,"ttl":"10m"}`), &tok)
		e.secrets = append(e.secrets, tok.Auth.ClientToken)
		return tok.Auth.ClientToken
	}
	open := func(tok string) *vaultcfg.Store {
		c := e.config(tok)
		c.Prefix = cfg.Prefix
		return e.open(c)
	}
	admin := open(token("smimeproxy-admin", vaultcfg.AdminPolicy(cfg)))
	proxy := open(token("smimeproxy-proxy", vaultcfg.ProxyPolicy(cfg)))

	key := rsaKey(t, 3)
	e.addKey(key)
	cert := newCert(t, key, "gina@example.com", time.Now())
	keyT := rsaKey(t, 2)
	certT := newCert(t, keyT, "gina@example.com", time.Now())
	if _, err := admin.Put(ctx, "gina", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatalf("admin Put(kv) = %v", err)
	}
	entryT, err := admin.Put(ctx, "gina", []*x509.Certificate{certT}, keyT, keystore.PutOptions{Transit: true})
	if err != nil {
		t.Fatalf("admin Put(transit) = %v", err)
	}
	if l, err := admin.List(ctx, "gina"); err != nil || len(l) != 2 {
		t.Fatalf("admin List() = %v, %v", l, err)
	}

	keys, err := proxy.Lookup(ctx, "gina", cms.RecipientIDsOf(certT))
	if err != nil || len(keys) != 1 {
		t.Fatalf("proxy Lookup() = %v, %v", keys, err)
	}
	cek := []byte("0123456789abcdef")
	ct, _ := rsa.EncryptPKCS1v15(rand.Reader, &keyT.PublicKey, cek)
	if got, err := keys[0].Private.(crypto.Decrypter).Decrypt(rand.Reader, ct, nil); err != nil || !bytes.Equal(got, cek) {
		t.Errorf("proxy Transit Decrypt() = %x, %v", got, err)
	}
	other := rsaKey(t, 1)
	if _, err := proxy.Put(ctx, "gina", []*x509.Certificate{newCert(t, other, "x@example.com", time.Now())}, other, keystore.PutOptions{}); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("proxy Put() = %v, want ErrPermissionDenied", err)
	}
	if err := proxy.Remove(ctx, "gina", entryT.ID); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("proxy Remove() = %v, want ErrPermissionDenied", err)
	}
	// The proxy's own state beside the keys is writable for it.
	if _, err := proxy.MarkerKey(ctx); err != nil {
		t.Errorf("proxy MarkerKey() = %v", err)
	}
	if err := proxy.WriteTLSCert(ctx, "192.0.2.1", []byte("cert"), []byte("key")); err != nil {
		t.Errorf("proxy WriteTLSCert() = %v", err)
	}
	// and so are the users' address books: certificates harvested from signed mail.
	carol := newCert(t, rsaKey(t, 1), "carol@example.org", time.Now())
	if _, err := proxy.Contacts().Add(ctx, "gina", carol, keystore.AddOptions{Source: keystore.SourceHarvest}); err != nil {
		t.Errorf("proxy Contacts().Add() = %v", err)
	}
	if got, err := proxy.Contacts().Certificates(ctx, "gina", "carol@example.org"); err != nil || len(got) != 1 {
		t.Errorf("proxy Contacts().Certificates() = %d, %v; want the harvested one", len(got), err)
	}
	for _, id := range []string{keystore.IDOf(cert), entryT.ID} {
		if err := admin.Remove(ctx, "gina", id); err != nil {
			t.Errorf("admin Remove(%s) = %v", id, err)
		}
	}
}
