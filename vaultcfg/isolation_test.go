package vaultcfg_test

//lint:file-ignore SA1019 tests build RSA PKCS #1 v1.5 key transport, what most S/MIME senders use (RFC 8551 section 2.3)

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// userKeys is one user's keys as imported by an admin: one in KV, one in Transit.
type userKeys struct {
	user               string
	kvCert, trCert     *x509.Certificate
	kvKey, trKey       *rsa.PrivateKey
	kvID, trID, trName string
}

func (u userKeys) ids() []cms.RecipientID {
	return append(cms.RecipientIDsOf(u.kvCert), cms.RecipientIDsOf(u.trCert)...)
}

// importUser imports a KV and a Transit key for user with the root token.
func (e *env) importUser(root *vaultcfg.Store, user string, kvKey, trKey *rsa.PrivateKey) userKeys {
	e.t.Helper()
	ctx := context.Background()
	e.addKey(kvKey)
	e.addKey(trKey)
	u := userKeys{user: user, kvKey: kvKey, trKey: trKey,
		kvCert: newCert(e.t, kvKey, user, time.Now()), trCert: newCert(e.t, trKey, user, time.Now())}
	kv, err := root.Put(ctx, user, []*x509.Certificate{u.kvCert}, kvKey, keystore.PutOptions{})
	if err != nil {
		e.t.Fatalf("Put(%s, kv) = %v", user, err)
	}
	tr, err := root.Put(ctx, user, []*x509.Certificate{u.trCert}, trKey, keystore.PutOptions{Transit: true})
	if err != nil {
		e.t.Fatalf("Put(%s, transit) = %v", user, err)
	}
	u.kvID, u.trID = kv.ID, tr.ID
	keys, err := root.Lookup(ctx, user, cms.RecipientIDsOf(u.trCert))
	if err != nil || len(keys) != 1 {
		e.t.Fatalf("Lookup(%s) = %v, %v", user, keys, err)
	}
	u.trName = keys[0].Private.(*vaultcfg.TransitKey).Name()
	return u
}

// policyToken loads policy hcl as name and returns a token with it (and Vault's default policy).
func (e *env) policyToken(name, hcl string) string {
	e.t.Helper()
	body, _ := json.Marshal(map[string]string{"policy": hcl})
	e.v.MustRequest("PUT", "sys/policy/"+name, string(body))
	var tok struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	json.Unmarshal(e.v.MustRequest("POST", "auth/token/create", `{"policies":["`+name+`"],"ttl":"10m"}`), &tok)
	if tok.Auth.ClientToken == "" {
		e.t.Fatal("no token")
	}
	e.secrets = append(e.secrets, tok.Auth.ClientToken)
	return tok.Auth.ClientToken
}

// as makes one Vault API call (path without /v1/) with token and returns the HTTP status.
func (e *env) as(token, method, path, body string) int {
	e.t.Helper()
	req, err := http.NewRequest(method, e.v.Addr()+"/v1/"+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// setup imports alice's and bob's keys and gives bob per-user and shared proxy state, returning the root store.
func isolationSetup(e *env) (alice, bob userKeys, bobMarker []byte) {
	ctx := context.Background()
	root := e.open(e.config(e.v.RootToken()))
	alice = e.importUser(root, "alice@example.com", rsaKey(e.t, 0), rsaKey(e.t, 1))
	bob = e.importUser(root, "bob@example.com", rsaKey(e.t, 2), rsaKey(e.t, 3))
	cfg := e.config(e.v.RootToken())
	cfg.User = bob.user
	rootBob := e.open(cfg)
	var err error
	if bobMarker, err = rootBob.MarkerKey(ctx); err != nil {
		e.t.Fatal(err)
	}
	if err := rootBob.WriteTLSCert(ctx, "127.0.0.1", []byte("bob cert"), []byte("bob key")); err != nil {
		e.t.Fatal(err)
	}
	if _, err := root.MarkerKey(ctx); err != nil { // the shared one, of an all-users proxy
		e.t.Fatal(err)
	}
	return alice, bob, bobMarker
}

// checkIsolation checks what a token with alice's per-user policy (UserPolicy or TemplatedPolicy) can do: all
// that alice's own proxy needs, and nothing with bob's keys or state, or the shared state.
func checkIsolation(t *testing.T, e *env, tok string, alice, bob userKeys, bobMarker []byte) {
	ctx := context.Background()
	cfg := e.config(tok)
	cfg.User = alice.user

	// Everything alice's proxy needs.
	s := e.open(cfg)
	keys, err := s.Lookup(ctx, alice.user, alice.ids())
	if err != nil || len(keys) != 2 {
		t.Fatalf("Lookup(alice) = %d keys, %v; want her KV and Transit key", len(keys), err)
	}
	for _, k := range keys {
		cek := []byte("0123456789abcdef0123456789abcdef")
		ct, _ := rsa.EncryptPKCS1v15(rand.Reader, k.Cert.PublicKey.(*rsa.PublicKey), cek)
		if got, err := k.Private.(crypto.Decrypter).Decrypt(rand.Reader, ct, nil); err != nil || !bytes.Equal(got, cek) {
			t.Errorf("alice's %s key: Decrypt = %x, %v", k.Storage, got, err)
		}
		// Signing (the submission front end): a Transit key signs in Vault (transit/sign).
		digest := sha256.Sum256([]byte("signed attributes"))
		sig, err := k.Private.(crypto.Signer).Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil || rsa.VerifyPKCS1v15(k.Cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], sig) != nil {
			t.Errorf("alice's %s key: Sign = %v", k.Storage, err)
		}
	}
	mk, err := s.MarkerKey(ctx)
	if err != nil || len(mk) != 32 {
		t.Fatalf("MarkerKey() = %d bytes, %v", len(mk), err)
	}
	if again, err := e.open(cfg).MarkerKey(ctx); err != nil || !bytes.Equal(again, mk) {
		t.Errorf("MarkerKey() after a restart: %v, same %v", err, bytes.Equal(again, mk))
	}
	if bytes.Equal(mk, bobMarker) {
		t.Error("alice's proxy got bob's marker key")
	}
	if err := s.WriteTLSCert(ctx, "127.0.0.1", []byte("alice cert"), []byte("alice key")); err != nil {
		t.Errorf("WriteTLSCert() = %v", err)
	}
	if c, k, err := s.ReadTLSCert(ctx, "127.0.0.1"); err != nil || string(c) != "alice cert" || string(k) != "alice key" {
		t.Errorf("ReadTLSCert() = %q, %q, %v", c, k, err)
	}
	// The state and the address book live in alice's subtree, beside (never among) her keys.
	e.v.MustRequest("GET", "secret/data/smimeproxy/alice@example.com/.proxy/marker-key", "")
	e.v.MustRequest("GET", "secret/data/smimeproxy/alice@example.com/.tls/127.0.0.1", "")
	if st := e.as(tok, "PUT", "secret/data/smimeproxy/alice@example.com/contacts/carol", `{"data":{"name":"Carol"}}`); st != 200 {
		t.Errorf("create an address book entry: HTTP %d", st)
	}
	if st := e.as(tok, "PUT", "secret/data/smimeproxy/alice@example.com/contacts/carol", `{"data":{"name":"Carol C."}}`); st != 200 {
		t.Errorf("update an address book entry: HTTP %d", st)
	}
	if st := e.as(tok, "LIST", "secret/metadata/smimeproxy/alice@example.com/contacts", ""); st != 200 {
		t.Errorf("list the address book: HTTP %d", st)
	}
	if st := e.as(tok, "DELETE", "secret/metadata/smimeproxy/alice@example.com/contacts/carol", ""); st != 204 {
		t.Errorf("delete an address book entry: HTTP %d", st)
	}
	if l, err := s.List(ctx, alice.user); err != nil || len(l) != 2 {
		t.Errorf("List(alice) = %v, %v; want her 2 keys, no state folders", l, err)
	}

	// Nothing of bob's, asked through a Store that does not refuse by itself, so Vault's answer is tested.
	all := e.open(e.config(tok))
	if _, err := all.Lookup(ctx, bob.user, bob.ids()); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("Lookup(bob) = %v, want ErrPermissionDenied", err)
	}
	if _, err := all.List(ctx, bob.user); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("List(bob) = %v, want ErrPermissionDenied", err)
	}
	ct := base64.StdEncoding.EncodeToString(make([]byte, 256))
	for _, c := range []struct{ method, path, body string }{
		{"LIST", "secret/metadata/smimeproxy", ""}, // the list of users
		{"LIST", "secret/metadata/smimeproxy/bob@example.com", ""},
		{"GET", "secret/data/smimeproxy/bob@example.com/" + bob.kvID, ""},
		{"GET", "secret/data/smimeproxy/bob@example.com/" + bob.trID, ""},
		{"POST", "transit/decrypt/" + bob.trName, `{"ciphertext":"vault:v1:` + ct + `","padding_scheme":"pkcs1v15"}`},
		{"POST", "transit/sign/" + bob.trName + "/sha2-256", `{"input":"` + ct[:44] + `","prehashed":true,"signature_algorithm":"pkcs1v15"}`},
		{"GET", "secret/data/smimeproxy/bob@example.com/.proxy/marker-key", ""},
		{"PUT", "secret/data/smimeproxy/bob@example.com/.proxy/marker-key", `{"data":{"key":"AAAA"}}`},
		{"GET", "secret/data/smimeproxy/bob@example.com/.tls/127.0.0.1", ""},
		{"PUT", "secret/data/smimeproxy/bob@example.com/.tls/127.0.0.1", `{"data":{"certificate":"x","private_key":"y"}}`},
		{"PUT", "secret/data/smimeproxy/bob@example.com/contacts/x", `{"data":{"name":"x"}}`},
		{"LIST", "secret/metadata/smimeproxy/bob@example.com/contacts", ""},
		{"DELETE", "secret/metadata/smimeproxy/bob@example.com/contacts/x", ""},
		{"DELETE", "secret/metadata/smimeproxy/alice@example.com/.proxy/marker-key", ""},
		// the shared state of an all-users proxy
		{"GET", "secret/data/smimeproxy/.proxy/marker-key", ""},
		{"PUT", "secret/data/smimeproxy/.tls/127.0.0.1", `{"data":{"certificate":"x","private_key":"y"}}`},
		// alice's own key secrets are the admin's to write
		{"PUT", "secret/data/smimeproxy/alice@example.com/" + alice.kvID, `{"data":{"certificate_chain":"x"}}`},
		{"DELETE", "secret/metadata/smimeproxy/alice@example.com/" + alice.kvID, ""},
		{"GET", "transit/keys/" + alice.trName, ""},
	} {
		if st := e.as(tok, c.method, c.path, c.body); st != http.StatusForbidden {
			t.Errorf("%s %s with alice's token: HTTP %d, want 403", c.method, c.path, st)
		}
	}
	bobCfg := e.config(tok)
	bobCfg.User = bob.user
	sb := e.open(bobCfg)
	if _, err := sb.MarkerKey(ctx); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("MarkerKey() of bob's state = %v, want ErrPermissionDenied", err)
	}
	if _, _, err := sb.ReadTLSCert(ctx, "127.0.0.1"); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("ReadTLSCert() of bob's state = %v, want ErrPermissionDenied", err)
	}
	if err := sb.WriteTLSCert(ctx, "127.0.0.1", []byte("planted"), []byte("planted")); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("WriteTLSCert() into bob's state = %v, want ErrPermissionDenied", err)
	}
	if err := all.WriteTLSCert(ctx, "127.0.0.1", []byte("planted"), []byte("planted")); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("WriteTLSCert() into the shared state = %v, want ErrPermissionDenied", err)
	}
	if _, err := all.MarkerKey(ctx); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("MarkerKey() of the shared state = %v, want ErrPermissionDenied", err)
	}
	rc := e.config(e.v.RootToken())
	rc.User = bob.user
	rb := e.open(rc)
	if m, err := rb.MarkerKey(ctx); err != nil || !bytes.Equal(m, bobMarker) {
		t.Errorf("bob's marker key changed: %v", err)
	}
	if c, _, err := rb.ReadTLSCert(ctx, "127.0.0.1"); err != nil || string(c) != "bob cert" {
		t.Errorf("bob's TLS certificate = %q, %v", c, err)
	}
	// A one-user store says so at once for another user, without asking Vault.
	if _, err := s.Lookup(ctx, bob.user, bob.ids()); !errors.Is(err, vaultcfg.ErrPermissionDenied) || !strings.Contains(err.Error(), "serves only") {
		t.Errorf("one-user Lookup(bob) = %v", err)
	}
}

// TestUserPolicyIsolation: a token with UserPolicy(alice) does all alice's proxy needs and nothing with bob's
// keys or proxy state (Vault enforces it).
func TestUserPolicyIsolation(t *testing.T) {
	e := newEnv(t)
	alice, bob, bobMarker := isolationSetup(e)
	hcl, err := vaultcfg.UserPolicy(vaultcfg.Config{}, alice.user)
	if err != nil {
		t.Fatal(err)
	}
	checkIsolation(t, e, e.policyToken("smimeproxy-alice", hcl), alice, bob, bobMarker)
}

// TestTemplatedPolicyIsolation: one TemplatedPolicy for all users, attached to userpass users; Vault fills it
// in from each entity's metadata (EntityMetadata), so alice's login gets alice's keys only. An entity without
// the metadata gets nothing, and a user cannot set her own metadata.
func TestTemplatedPolicyIsolation(t *testing.T) {
	e := newEnv(t)
	alice, bob, bobMarker := isolationSetup(e)
	body, _ := json.Marshal(map[string]string{"policy": vaultcfg.TemplatedPolicy(vaultcfg.Config{})})
	e.v.MustRequest("PUT", "sys/policy/smimeproxy-user", string(body))
	e.v.MustRequest("POST", "sys/auth/userpass", `{"type":"userpass"}`)
	login := func(name string) (token, entityID string) {
		e.v.MustRequest("POST", "auth/userpass/users/"+name, `{"password":"pw-`+name+`","token_policies":"smimeproxy-user"}`)
		var res struct {
			Auth struct {
				ClientToken string `json:"client_token"`
				EntityID    string `json:"entity_id"`
			} `json:"auth"`
		}
		json.Unmarshal(e.v.MustRequest("POST", "auth/userpass/login/"+name, `{"password":"pw-`+name+`"}`), &res)
		if res.Auth.ClientToken == "" || res.Auth.EntityID == "" {
			t.Fatalf("userpass login %s: no token or entity", name)
		}
		e.secrets = append(e.secrets, res.Auth.ClientToken)
		return res.Auth.ClientToken, res.Auth.EntityID
	}
	setMetadata := func(entityID, user string) {
		md, err := vaultcfg.EntityMetadata(user)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(map[string]any{"metadata": md})
		e.v.MustRequest("POST", "identity/entity/id/"+entityID, string(b))
	}
	// userpass names cannot hold "@": the login name and the key store's user name differ, the metadata links them.
	tok, eid := login("alice")
	bare, _ := login("mallory") // an entity without metadata
	if st := e.as(tok, "GET", "secret/data/smimeproxy/alice@example.com/"+alice.kvID, ""); st != http.StatusForbidden {
		t.Errorf("before the metadata is set: HTTP %d, want 403", st)
	}
	setMetadata(eid, alice.user)
	checkIsolation(t, e, tok, alice, bob, bobMarker)

	for _, p := range []string{"secret/data/smimeproxy/alice@example.com/" + alice.kvID, "secret/data/smimeproxy/bob@example.com/" + bob.kvID} {
		if st := e.as(bare, "GET", p, ""); st != http.StatusForbidden {
			t.Errorf("GET %s by an entity without metadata: HTTP %d, want 403", p, st)
		}
	}
	if st := e.as(tok, "POST", "identity/entity/id/"+eid, `{"metadata":{"smimeproxy_user":"bob@example.com"}}`); st != http.StatusForbidden {
		t.Errorf("alice setting her own entity metadata: HTTP %d, want 403", st)
	}
}

// TestPolicyUserNames: a user name that could leave its own subtree of the policy is refused: path separators,
// dot names (also the state folders ".tls" and ".proxy") and "+", a segment wildcard in Vault policies.
func TestPolicyUserNames(t *testing.T) {
	for _, u := range []string{"", "..", ".", "a/b", "../bob", ".tls", ".proxy", "+", "+x", "*", "a*", "bob/*", "{{identity.entity.id}}", `a"b`} {
		if _, err := vaultcfg.UserPolicy(vaultcfg.Config{}, u); err == nil {
			t.Errorf("UserPolicy(%q) succeeded", u)
		}
		if _, err := vaultcfg.EntityMetadata(u); err == nil {
			t.Errorf("EntityMetadata(%q) succeeded", u)
		}
		if err := vaultcfg.ValidateUser(u); err == nil {
			t.Errorf("ValidateUser(%q) = nil", u)
		}
	}
	p, err := vaultcfg.UserPolicy(vaultcfg.Config{KVMount: "kv/", Prefix: "/mail/smime/", TransitMount: "tr"}, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	md, _ := vaultcfg.EntityMetadata("alice@example.com")
	for _, want := range []string{`"kv/data/mail/smime/alice@example.com/*"`, `"kv/metadata/mail/smime/alice@example.com/*"`,
		`"tr/decrypt/mail-smime-` + md[vaultcfg.MetadataTransit] + `-*"`} {
		if !strings.Contains(p, want) {
			t.Errorf("UserPolicy lacks %s:\n%s", want, p)
		}
	}
	if len(md[vaultcfg.MetadataTransit]) != 16 {
		t.Errorf("EntityMetadata transit id = %q, want 16 hex digits", md[vaultcfg.MetadataTransit])
	}
	if _, err := vaultcfg.Open(context.Background(), vaultcfg.Config{Addr: "http://127.0.0.1:1", User: "../bob"}); err == nil || !strings.Contains(err.Error(), "vault-user") {
		t.Errorf("Open(User ../bob) = %v, want a refusal naming vault-user", err)
	}
}
