package vaultcfg_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// contactCert makes a P-256 certificate for email valid from notBefore for a year.
func contactCert(t *testing.T, email string, notBefore time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newCert(t, key, email, notBefore)
}

func fps(cs []keystore.Contact) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Fingerprint[:8]+"/"+c.Trust)
	}
	return out
}

// TestContactsRoundTrip: entries live at <kv>/data/<prefix>/<user>/contacts/<address>/<fingerprint>; adding the
// same certificate twice writes nothing; Remove and SetTrust work; a user's key listing ignores the book.
func TestContactsRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.open(e.config(e.v.RootToken()))
	book := s.Contacts()
	const alice = "alice@example.com"

	// alice also has a key of her own: the book must not disturb it.
	key := rsaKey(t, 0)
	e.addKey(key)
	own := newCert(t, key, alice, time.Now().Add(-time.Hour))
	if _, err := s.Put(ctx, alice, []*x509.Certificate{own}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	bob := contactCert(t, "Bob@Example.COM", time.Now().Add(-time.Hour))
	caps := []byte{0x30, 0x0b, 0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03} // truncated on purpose: opaque bytes
	got, err := book.Add(ctx, alice, bob, keystore.AddOptions{Source: keystore.SourceHarvest, Capabilities: caps})
	if err != nil || len(got) != 1 || got[0].Address != "bob@example.com" {
		t.Fatalf("Add = %+v, %v", got, err)
	}
	fp := keystore.Fingerprint(bob)
	path := "smimeproxy/" + alice + "/contacts/bob@example.com/" + fp
	if v := kvVersion(t, e.v, path); v != 1 {
		t.Fatalf("KV version of %s = %d, want 1", path, v)
	}
	// Harvesting it again is idempotent.
	if _, err := book.Add(ctx, alice, bob, keystore.AddOptions{Source: keystore.SourceHarvest, Capabilities: caps}); err != nil {
		t.Fatal(err)
	}
	if v := kvVersion(t, e.v, path); v != 1 {
		t.Errorf("KV version after the same harvest = %d, want 1 (no write)", v)
	}

	cs, err := book.Certificates(ctx, alice, "BOB@example.com")
	if err != nil || len(cs) != 1 {
		t.Fatalf("Certificates = %v, %v", fps(cs), err)
	}
	c := cs[0]
	if c.Fingerprint != fp || !c.Cert.Equal(bob) || c.Trust != keystore.TrustNone || c.Source != keystore.SourceHarvest ||
		string(c.Capabilities) != string(caps) || time.Since(c.Added) > time.Minute {
		t.Errorf("Certificates()[0] = %+v", c)
	}

	// Keys: alice's key listing and lookup see only her key.
	entries, err := s.List(ctx, alice)
	if err != nil || len(entries) != 1 || entries[0].ID != keystore.IDOf(own) {
		t.Errorf("keys List = %+v, %v; want only alice's own key", entries, err)
	}
	keys, err := s.Lookup(ctx, alice, cms.RecipientIDsOf(own))
	if err != nil || len(keys) != 1 {
		t.Errorf("keys Lookup = %d keys, %v; want 1", len(keys), err)
	}

	// SetTrust raises, and a later untrusted harvest does not lower it.
	if c, err := book.SetTrust(ctx, alice, "bob@example.com", fp, keystore.TrustUser); err != nil || c.Trust != keystore.TrustUser {
		t.Fatalf("SetTrust = %+v, %v", c, err)
	}
	if got, err := book.Add(ctx, alice, bob, keystore.AddOptions{Source: keystore.SourceHarvest}); err != nil || got[0].Trust != keystore.TrustUser {
		t.Errorf("harvest after trust = %v, %v; want trust kept", fps(got), err)
	}
	if _, err := book.SetTrust(ctx, alice, "bob@example.com", fp, "maybe"); !errors.Is(err, keystore.ErrBadTrust) {
		t.Errorf("SetTrust(maybe) = %v, want ErrBadTrust", err)
	}

	// Remove destroys the entry; removing again is ErrContactNotFound.
	if err := book.Remove(ctx, alice, "bob@example.com", fp); err != nil {
		t.Fatal(err)
	}
	if _, err := e.v.Request("GET", "secret/metadata/"+path, ""); err == nil {
		t.Errorf("metadata of %s still there after Remove", path)
	}
	if err := book.Remove(ctx, alice, "bob@example.com", fp); !errors.Is(err, keystore.ErrContactNotFound) {
		t.Errorf("second Remove = %v, want ErrContactNotFound", err)
	}
	if err := book.Remove(ctx, alice, "bob@example.com", "../x"); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Errorf("Remove(../x) = %v, want an invalid fingerprint error", err)
	}
	if _, err := book.Add(ctx, alice, newCert(t, key, "", time.Now()), keystore.AddOptions{}); !errors.Is(err, keystore.ErrNoAddress) {
		t.Errorf("Add(no email) = %v, want ErrNoAddress", err)
	}
}

// TestContactsAddressEscaping: an address is one path segment whatever it contains, and List returns it.
func TestContactsAddressEscaping(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	book := e.open(e.config(e.v.RootToken())).Contacts()
	for addr, seg := range map[string]string{
		"a/b@Example.com":     "a=2Fb@example.com",
		".hidden@example.com": "=2Ehidden@example.com",
		"x=y%z@example.com":   "x=3Dy=25z@example.com",
	} {
		c := contactCert(t, addr, time.Now().Add(-time.Hour))
		if _, err := book.Add(ctx, "alice", c, keystore.AddOptions{}); err != nil {
			t.Fatalf("Add(%s) = %v", addr, err)
		}
		if v := kvVersion(t, e.v, "smimeproxy/alice/contacts/"+seg+"/"+keystore.Fingerprint(c)); v != 1 {
			t.Errorf("%s: not stored under contacts/%s/", addr, seg)
		}
	}
	all, err := book.List(ctx, "alice")
	if err != nil || len(all) != 3 {
		t.Fatalf("List = %v, %v", fps(all), err)
	}
	want := []string{".hidden@example.com", "a/b@example.com", "x=y%z@example.com"}
	for i, c := range all {
		if c.Address != want[i] {
			t.Errorf("List()[%d].Address = %q, want %q", i, c.Address, want[i])
		}
	}
}

// TestContactsPreference: the newest valid certificate is preferred, a trusted one over a newer untrusted one,
// and an address holds at most keystore.MaxContactsPerAddress certificates, the oldest evicted.
func TestContactsPreference(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	book := e.open(e.config(e.v.RootToken())).Contacts()
	now := time.Now()
	old := contactCert(t, "bob@example.com", now.Add(-30*24*time.Hour))
	newer := contactCert(t, "bob@example.com", now.Add(-24*time.Hour))
	expired := contactCert(t, "bob@example.com", now.Add(-2*365*24*time.Hour))
	for _, c := range []*x509.Certificate{old, expired, newer} {
		if _, err := book.Add(ctx, "alice", c, keystore.AddOptions{Source: keystore.SourceHarvest}); err != nil {
			t.Fatal(err)
		}
	}
	cs, _ := book.Certificates(ctx, "alice", "bob@example.com")
	if len(cs) != 3 || cs[0].Fingerprint != keystore.Fingerprint(newer) || cs[2].Fingerprint != keystore.Fingerprint(expired) {
		t.Errorf("order = %v; want newer, old, expired", fps(cs))
	}
	// The older one verified to a root when harvested again: it is now preferred over the newer untrusted one.
	if _, err := book.Add(ctx, "alice", old, keystore.AddOptions{Source: keystore.SourceHarvest, Trust: keystore.TrustChain}); err != nil {
		t.Fatal(err)
	}
	cs, _ = book.Certificates(ctx, "alice", "bob@example.com")
	if cs[0].Fingerprint != keystore.Fingerprint(old) || cs[0].Trust != keystore.TrustChain {
		t.Errorf("after chain trust: order = %v; want the trusted old one first", fps(cs))
	}
	// A still newer untrusted harvest does not replace it.
	newest := contactCert(t, "bob@example.com", now.Add(-time.Hour))
	if _, err := book.Add(ctx, "alice", newest, keystore.AddOptions{Source: keystore.SourceHarvest}); err != nil {
		t.Fatal(err)
	}
	cs, _ = book.Certificates(ctx, "alice", "bob@example.com")
	if cs[0].Fingerprint != keystore.Fingerprint(old) || cs[1].Fingerprint != keystore.Fingerprint(newest) {
		t.Errorf("after an untrusted newer harvest: order = %v; want trusted old, then newest", fps(cs))
	}

	// Fill the address: the expired certificate goes first, then the oldest untrusted.
	for i := len(cs); i < keystore.MaxContactsPerAddress+1; i++ {
		c := contactCert(t, "bob@example.com", now.Add(-time.Duration(i)*time.Minute))
		if _, err := book.Add(ctx, "alice", c, keystore.AddOptions{Source: keystore.SourceHarvest}); err != nil {
			t.Fatal(err)
		}
	}
	cs, _ = book.Certificates(ctx, "alice", "bob@example.com")
	if len(cs) != keystore.MaxContactsPerAddress {
		t.Fatalf("%d certificates for bob, want %d", len(cs), keystore.MaxContactsPerAddress)
	}
	for _, c := range cs {
		if c.Fingerprint == keystore.Fingerprint(expired) {
			t.Errorf("the expired certificate was kept over a valid one")
		}
	}
	if _, err := e.v.Request("GET", "secret/metadata/smimeproxy/alice/contacts/bob@example.com/"+keystore.Fingerprint(expired), ""); err == nil {
		t.Errorf("the evicted certificate's secret is still in Vault")
	}
	ancient := contactCert(t, "bob@example.com", now.Add(-300*24*time.Hour))
	if _, err := book.Add(ctx, "alice", ancient, keystore.AddOptions{Source: keystore.SourceHarvest}); !errors.Is(err, keystore.ErrBookFull) {
		t.Errorf("Add(older than all of a full address) = %v, want ErrBookFull", err)
	}
}

// TestContactsPerUser: alice's book does not show bob's, and a token whose policy covers only alice's folder
// (<prefix>/alice/*, as per-user policies grant) can use her book and not bob's.
func TestContactsPerUser(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	book := e.open(e.config(e.v.RootToken())).Contacts()
	carol := contactCert(t, "carol@example.com", time.Now().Add(-time.Hour))
	dave := contactCert(t, "dave@example.com", time.Now().Add(-time.Hour))
	if _, err := book.Add(ctx, "alice", carol, keystore.AddOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := book.Add(ctx, "bob", dave, keystore.AddOptions{}); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]string{"alice": "carol@example.com", "bob": "dave@example.com"} {
		all, err := book.List(ctx, user)
		if err != nil || len(all) != 1 || all[0].Address != want {
			t.Errorf("List(%s) = %v, %v; want only %s", user, fps(all), err, want)
		}
	}
	if cs, _ := book.Certificates(ctx, "bob", "carol@example.com"); len(cs) != 0 {
		t.Errorf("bob sees alice's certificate for carol")
	}
	if _, err := book.List(ctx, "../alice"); err == nil {
		t.Errorf("List(../alice) succeeded")
	}

	policy := `path "secret/data/smimeproxy/alice/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/smimeproxy/alice/*" { capabilities = ["list", "read", "delete"] }`
	body, _ := json.Marshal(map[string]string{"policy": policy})
	e.v.MustRequest("PUT", "sys/policies/acl/alice-only", string(body))
	var tok struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if err := json.Unmarshal(e.v.MustRequest("POST", "auth/token/create", `{"policies":["alice-only"],"ttl":"10m"}`), &tok); err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, tok.Auth.ClientToken)
	aliceBook := e.open(e.config(tok.Auth.ClientToken)).Contacts()
	if all, err := aliceBook.List(ctx, "alice"); err != nil || len(all) != 1 {
		t.Errorf("alice's token: List(alice) = %v, %v", fps(all), err)
	}
	if _, err := aliceBook.Add(ctx, "alice", dave, keystore.AddOptions{}); err != nil {
		t.Errorf("alice's token: Add = %v", err)
	}
	if _, err := aliceBook.List(ctx, "bob"); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("alice's token: List(bob) = %v, want ErrPermissionDenied", err)
	}
	if _, err := aliceBook.Add(ctx, "bob", carol, keystore.AddOptions{}); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("alice's token: Add(bob) = %v, want ErrPermissionDenied", err)
	}

	// A token that may write but not delete (no metadata delete): a full address still takes the new
	// certificate; the failed eviction is logged and leaves the address one over its bound.
	e.v.MustRequest("PUT", "sys/policies/acl/alice-nodelete", mustJSON(t, map[string]string{"policy": `path "secret/data/smimeproxy/alice/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/smimeproxy/alice/*" { capabilities = ["list"] }`}))
	if err := json.Unmarshal(e.v.MustRequest("POST", "auth/token/create", `{"policies":["alice-nodelete"],"ttl":"10m"}`), &tok); err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, tok.Auth.ClientToken)
	noDelete := e.open(e.config(tok.Auth.ClientToken)).Contacts()
	now := time.Now()
	for i := range keystore.MaxContactsPerAddress + 1 {
		c := contactCert(t, "gina@example.com", now.Add(-time.Duration(20-i)*time.Hour)) // each newer than the last
		if _, err := noDelete.Add(ctx, "alice", c, keystore.AddOptions{Source: keystore.SourceHarvest}); err != nil {
			t.Fatalf("Add #%d without delete permission = %v", i+1, err)
		}
	}
	if cs, _ := noDelete.Certificates(ctx, "alice", "gina@example.com"); len(cs) != keystore.MaxContactsPerAddress+1 {
		t.Errorf("%d certificates for gina, want %d (eviction denied)", len(cs), keystore.MaxContactsPerAddress+1)
	}
	if !strings.Contains(e.log.String(), "could not evict address-book certificate") {
		t.Errorf("the denied eviction was not logged")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
