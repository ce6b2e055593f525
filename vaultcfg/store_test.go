package vaultcfg_test

//lint:file-ignore SA1019 tests build RSA PKCS #1 v1.5 key transport, what most S/MIME senders use (RFC 8551 section 2.3)

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is one test's Vault with a log buffer checked for secrets at the end.
type env struct {
	t      *testing.T
	v      *testenv.Vault
	log    *syncBuffer
	logger *slog.Logger
	// secrets that must never appear in logs or errors
	secrets []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, v: testenv.StartVault(t), log: &syncBuffer{}}
	e.logger = slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.secrets = append(e.secrets, e.v.RootToken(), "PRIVATE KEY")
	t.Cleanup(func() { e.checkNoSecrets(e.log.String()) })
	return e
}

// checkNoSecrets fails if out contains a token, a PEM private key, or the bytes of a private key of this test.
func (e *env) checkNoSecrets(out string) {
	e.t.Helper()
	for _, s := range e.secrets {
		if s != "" && strings.Contains(out, s) {
			e.t.Errorf("output contains a secret (%.12s...):\n%s", s, out)
		}
	}
}

// addKey records key's private bytes as secrets.
func (e *env) addKey(key crypto.PrivateKey) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		e.t.Fatal(err)
	}
	e.secrets = append(e.secrets, base64.StdEncoding.EncodeToString(der)[40:80], hex.EncodeToString(der)[80:160])
	if k, ok := key.(*rsa.PrivateKey); ok {
		e.secrets = append(e.secrets, k.D.Text(16)[:32], k.D.String()[:32])
	}
}

func (e *env) config(token string) vaultcfg.Config {
	return vaultcfg.Config{Addr: e.v.Addr(), Token: token, Logger: e.logger}
}

func (e *env) open(cfg vaultcfg.Config) *vaultcfg.Store {
	e.t.Helper()
	s, err := vaultcfg.Open(context.Background(), cfg)
	if err != nil {
		e.t.Fatalf("Open() = %v", err)
	}
	e.t.Cleanup(s.Close)
	return s
}

// newCert makes a self-signed S/MIME certificate for key, valid from notBefore for a year.
func newCert(t testing.TB, key crypto.Signer, email string, notBefore time.Time) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	ski := sha1.Sum(pubDER)
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: email, Organization: []string{"smimeproxy test"}},
		EmailAddresses: []string{email},
		NotBefore:      notBefore,
		NotAfter:       notBefore.Add(365 * 24 * time.Hour),
		KeyUsage:       x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		SubjectKeyId:   ski[:],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	rsaOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// rsaKey returns the i-th of a few 2048-bit test keys, generated once per test binary.
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		for range 4 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	return rsaKeys[i]
}

func kvVersion(t *testing.T, v *testenv.Vault, path string) int {
	t.Helper()
	var m struct {
		Data struct {
			CurrentVersion int `json:"current_version"`
		} `json:"data"`
	}
	if err := json.Unmarshal(v.MustRequest("GET", "secret/metadata/"+path, ""), &m); err != nil {
		t.Fatal(err)
	}
	return m.Data.CurrentVersion
}

func TestKVPutLookupDecryptRemove(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.open(e.config(e.v.RootToken()))
	key := rsaKey(t, 0)
	e.addKey(key)
	cert := newCert(t, key, "bob@example.com", time.Now().Add(-time.Hour))
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.addKey(ecKey)
	ecCert := newCert(t, ecKey, "bob@example.com", time.Now().Add(-time.Hour))

	entry, err := s.Put(ctx, "bob@example.com", []*x509.Certificate{cert}, key, keystore.PutOptions{})
	if err != nil {
		t.Fatalf("Put() = %v", err)
	}
	if entry.ID != keystore.IDOf(cert) || entry.Storage != keystore.StorageKV || entry.Emails[0] != "bob@example.com" {
		t.Errorf("Put() entry = %+v", entry)
	}
	path := "smimeproxy/bob@example.com/" + entry.ID
	if got := kvVersion(t, e.v, path); got != 1 {
		t.Fatalf("KV version after Put = %d, want 1", got)
	}
	// Idempotent: the same certificate again writes nothing.
	if _, err := s.Put(ctx, "bob@example.com", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatalf("second Put() = %v", err)
	}
	if got := kvVersion(t, e.v, path); got != 1 {
		t.Errorf("KV version after re-Put = %d, want 1 (idempotent)", got)
	}
	if _, err := s.Put(ctx, "bob@example.com", []*x509.Certificate{ecCert}, ecKey, keystore.PutOptions{}); err != nil {
		t.Fatalf("Put(EC) = %v", err)
	}
	// A key that does not belong to the certificate is refused.
	if _, err := s.Put(ctx, "bob@example.com", []*x509.Certificate{cert}, rsaKey(t, 1), keystore.PutOptions{}); err == nil {
		t.Error("Put(mismatched key) succeeded")
	}

	// The secret holds what the layout promises.
	var raw struct {
		Data struct {
			Data map[string]any `json:"data"`
		} `json:"data"`
	}
	json.Unmarshal(e.v.MustRequest("GET", "secret/data/"+path, ""), &raw)
	for _, f := range []string{"certificate_chain", "private_key", "fingerprint", "subject", "emails", "not_before", "not_after", "recipient_ids", "storage"} {
		if raw.Data.Data[f] == nil {
			t.Errorf("secret lacks field %q", f)
		}
	}

	list, err := s.List(ctx, "bob@example.com")
	if err != nil || len(list) != 2 {
		t.Fatalf("List() = %v, %v; want 2 entries", list, err)
	}
	if other, err := s.List(ctx, "alice@example.com"); err != nil || len(other) != 0 {
		t.Errorf("List(other user) = %v, %v; want none", other, err)
	}

	// Lookup by the certificate's recipient identifiers (RFC 5652 section 6.2.1), each form alone.
	for _, id := range cms.RecipientIDsOf(cert) {
		keys, err := s.Lookup(ctx, "bob@example.com", []cms.RecipientID{id})
		if err != nil || len(keys) != 1 || keys[0].ID != entry.ID {
			t.Fatalf("Lookup(%v) = %v, %v", id, keys, err)
		}
		if keys[0].Storage != keystore.StorageKV || !keys[0].Cert.Equal(cert) {
			t.Errorf("Lookup(%v) key = %+v", id, keys[0].Entry)
		}
	}
	// A user's keys are only for that user.
	if keys, err := s.Lookup(ctx, "alice@example.com", cms.RecipientIDsOf(cert)); err != nil || len(keys) != 0 {
		t.Errorf("Lookup(other user) = %v, %v; want none", keys, err)
	}

	// Decrypt a content-encryption key with the key from KV.
	keys, _ := s.Lookup(ctx, "bob@example.com", cms.RecipientIDsOf(cert))
	cek := []byte("0123456789abcdef0123456789abcdef")
	ct, _ := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, cek)
	got, err := keys[0].Private.(crypto.Decrypter).Decrypt(rand.Reader, ct, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: 32})
	if err != nil || !bytes.Equal(got, cek) {
		t.Errorf("KV key Decrypt() = %x, %v; want %x", got, err, cek)
	}
	ecKeys, err := s.Lookup(ctx, "bob@example.com", cms.RecipientIDsOf(ecCert))
	if err != nil || len(ecKeys) != 1 {
		t.Fatalf("Lookup(EC) = %v, %v", ecKeys, err)
	}
	if k, ok := ecKeys[0].Private.(*ecdsa.PrivateKey); !ok || !k.Equal(ecKey) {
		t.Errorf("Lookup(EC) private = %T, want the stored *ecdsa.PrivateKey", ecKeys[0].Private)
	}

	if err := s.Remove(ctx, "bob@example.com", entry.ID); err != nil {
		t.Fatalf("Remove() = %v", err)
	}
	if keys, err := s.Lookup(ctx, "bob@example.com", cms.RecipientIDsOf(cert)); err != nil || len(keys) != 0 {
		t.Errorf("Lookup after Remove = %v, %v; want none", keys, err)
	}
	if _, err := e.v.Request("GET", "secret/metadata/"+path, ""); err == nil {
		t.Error("secret metadata still exists after Remove (versions with the private key kept)")
	}
	if err := s.Remove(ctx, "bob@example.com", entry.ID); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("second Remove() = %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, "bob@example.com", "../x"); err == nil {
		t.Error("Remove(bad id) succeeded")
	}
}

func TestInvalidUsers(t *testing.T) {
	for _, u := range []string{"", ".", "..", "../bob", "bob/x", "a\\b", "bob x", "bob\n", ".hidden", "-x", "a*", strings.Repeat("a", 300)} {
		if err := vaultcfg.ValidateUser(u); err == nil {
			t.Errorf("ValidateUser(%q) = nil, want an error", u)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("ValidateUser(%q) error has a newline: %q", u, err)
		}
	}
	for _, u := range []string{"bob", "bob@example.com", "first.last+tag@example.co.uk", "u_1-2"} {
		if err := vaultcfg.ValidateUser(u); err != nil {
			t.Errorf("ValidateUser(%q) = %v", u, err)
		}
	}
}

func TestTransit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.open(e.config(e.v.RootToken()))
	key := rsaKey(t, 1)
	e.addKey(key)
	cert := newCert(t, key, "bob@example.com", time.Now().Add(-time.Hour))
	user := "bob@example.com"

	// First in KV, then moved to Transit: the KV history with the private key must go.
	if _, err := s.Put(ctx, user, []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	entry, err := s.Put(ctx, user, []*x509.Certificate{cert}, key, keystore.PutOptions{Transit: true})
	if err != nil {
		t.Fatalf("Put(transit) = %v", err)
	}
	if entry.Storage != keystore.StorageTransit {
		t.Errorf("Put(transit) storage = %q", entry.Storage)
	}
	path := "smimeproxy/" + user + "/" + entry.ID
	if got := kvVersion(t, e.v, path); got != 1 {
		t.Errorf("KV versions after moving to transit = %d, want 1 (old versions destroyed)", got)
	}
	data := string(e.v.MustRequest("GET", "secret/data/"+path, ""))
	if strings.Contains(data, "PRIVATE KEY") || strings.Contains(data, `"private_key"`) {
		t.Errorf("transit key's KV secret holds a private key: %s", data)
	}
	if _, err := s.Put(ctx, user, []*x509.Certificate{cert}, key, keystore.PutOptions{Transit: true}); err != nil {
		t.Fatalf("second Put(transit) = %v", err)
	}
	if got := kvVersion(t, e.v, path); got != 1 {
		t.Errorf("KV version after re-Put(transit) = %d, want 1", got)
	}

	keys, err := s.Lookup(ctx, user, cms.RecipientIDsOf(cert))
	if err != nil || len(keys) != 1 {
		t.Fatalf("Lookup() = %v, %v", keys, err)
	}
	tk, ok := keys[0].Private.(*vaultcfg.TransitKey)
	if !ok {
		t.Fatalf("Lookup() private = %T, want *vaultcfg.TransitKey", keys[0].Private)
	}
	var dec crypto.Decrypter = tk
	if !key.PublicKey.Equal(dec.Public()) {
		t.Error("TransitKey.Public() is not the certificate's key")
	}
	cek := []byte("0123456789abcdef0123456789abcdef")

	t.Run("pkcs1v15", func(t *testing.T) {
		ct, _ := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, cek)
		for _, opts := range []crypto.DecrypterOpts{nil, &rsa.PKCS1v15DecryptOptions{}, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: 32}} {
			got, err := dec.Decrypt(rand.Reader, ct, opts)
			if err != nil || !bytes.Equal(got, cek) {
				t.Errorf("Decrypt(opts %+v) = %x, %v; want %x", opts, got, err, cek)
			}
		}
	})
	t.Run("oaep-sha256", func(t *testing.T) {
		ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, cek, nil)
		got, err := dec.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA256})
		if err != nil || !bytes.Equal(got, cek) {
			t.Errorf("Decrypt(OAEP-SHA256) = %x, %v; want %x", got, err, cek)
		}
	})
	t.Run("oaep-sha1 refused", func(t *testing.T) {
		ct, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, &key.PublicKey, cek, nil)
		for _, o := range []*rsa.OAEPOptions{{Hash: crypto.SHA1}, {Hash: crypto.SHA256, MGFHash: crypto.SHA1}, {Hash: crypto.SHA256, Label: []byte("x")}} {
			if _, err := dec.Decrypt(rand.Reader, ct, o); !errors.Is(err, vaultcfg.ErrTransitOAEPParams) {
				t.Errorf("Decrypt(%+v) = %v, want ErrTransitOAEPParams", o, err)
			}
		}
	})
	t.Run("bad ciphertext gives a random session key", func(t *testing.T) {
		ct, _ := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, cek)
		ct[len(ct)-1] ^= 1
		opts := &rsa.PKCS1v15DecryptOptions{SessionKeyLen: 32}
		a, err := dec.Decrypt(rand.Reader, ct, opts)
		if err != nil || len(a) != 32 {
			t.Fatalf("Decrypt(bad, SessionKeyLen) = %x, %v; want 32 random bytes, no error", a, err)
		}
		b, _ := dec.Decrypt(rand.Reader, ct, opts)
		if bytes.Equal(a, b) || bytes.Equal(a, cek) {
			t.Error("random session keys repeat or equal the real key")
		}
		// A correct ciphertext of the wrong length also yields a random key.
		short, _ := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, cek[:16])
		if got, err := dec.Decrypt(rand.Reader, short, opts); err != nil || len(got) != 32 || bytes.Equal(got[:16], cek[:16]) {
			t.Errorf("Decrypt(wrong length, SessionKeyLen) = %x, %v", got, err)
		}
		// Without SessionKeyLen the failure is an error, and a vague one.
		if _, err := dec.Decrypt(rand.Reader, ct, nil); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("Decrypt(bad, nil) = %v, want a one-line error", err)
		}
	})
	t.Run("batch", func(t *testing.T) {
		var cts [][]byte
		for i := range 5 {
			ct, _ := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, append(cek[:31:31], byte(i)))
			cts = append(cts, ct)
		}
		cts[2] = bytes.Clone(cts[2])
		cts[2][10] ^= 0xff
		res, err := tk.DecryptBatch(ctx, cts, vaultcfg.PaddingPKCS1v15)
		if err != nil || len(res) != 5 {
			t.Fatalf("DecryptBatch() = %v, %v", res, err)
		}
		for i, r := range res {
			if i == 2 {
				if r.Err == nil {
					t.Errorf("item 2 (corrupted) decrypted to %x", r.Plaintext)
				}
				continue
			}
			if r.Err != nil || !bytes.Equal(r.Plaintext, append(cek[:31:31], byte(i))) {
				t.Errorf("item %d = %x, %v", i, r.Plaintext, r.Err)
			}
		}
	})

	// Transit refuses EC keys with an explanation.
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecCert := newCert(t, ecKey, "bob@example.com", time.Now())
	_, err = s.Put(ctx, user, []*x509.Certificate{ecCert}, ecKey, keystore.PutOptions{Transit: true})
	if err == nil || !strings.Contains(err.Error(), "ECDH") {
		t.Errorf("Put(EC, transit) = %v, want a refusal explaining ECDH", err)
	}

	if err := s.Remove(ctx, user, entry.ID); err != nil {
		t.Fatalf("Remove(transit) = %v", err)
	}
	if _, err := e.v.Request("GET", "transit/keys/"+tk.Name(), ""); err == nil {
		t.Error("transit key still exists after Remove")
	}
}

// TestErrors checks the single-line error classes: unreachable, bad token, missing mount, 403, sealed.
func TestErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	oneLine := func(err error) {
		t.Helper()
		if err == nil {
			return
		}
		t.Logf("error: %v", err)
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("multi-line error: %q", err)
		}
		e.checkNoSecrets(err.Error())
	}

	t.Run("unreachable", func(t *testing.T) {
		_, err := vaultcfg.Open(ctx, vaultcfg.Config{Addr: "http://127.0.0.1:1", Token: e.v.RootToken()})
		oneLine(err)
		if !errors.Is(err, vaultcfg.ErrUnreachable) || !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("Open(closed port) = %v, want ErrUnreachable", err)
		}
	})
	t.Run("bad token", func(t *testing.T) {
		_, err := vaultcfg.Open(ctx, e.config("hvs.not-a-token"))
		oneLine(err)
		if !errors.Is(err, vaultcfg.ErrPermissionDenied) || strings.Contains(err.Error(), "not-a-token") {
			t.Errorf("Open(bad token) = %v, want ErrPermissionDenied without the token", err)
		}
	})
	t.Run("no token", func(t *testing.T) {
		_, err := vaultcfg.Open(ctx, vaultcfg.Config{Addr: e.v.Addr(), TokenFile: filepath.Join(t.TempDir(), ".vault-token")})
		if err == nil || !strings.Contains(err.Error(), "vault login") {
			t.Errorf("Open(no token) = %v, want advice to log in", err)
		}
	})
	t.Run("token file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), ".vault-token")
		os.WriteFile(f, []byte(e.v.RootToken()+"\n"), 0o600)
		s, err := vaultcfg.Open(ctx, vaultcfg.Config{Addr: e.v.Addr(), TokenFile: f})
		if err != nil {
			t.Fatalf("Open(token file) = %v", err)
		}
		defer s.Close()
		if _, err := s.List(ctx, "bob"); err != nil {
			t.Errorf("List() with token from file = %v", err)
		}
	})
	t.Run("missing mount", func(t *testing.T) {
		cfg := e.config(e.v.RootToken())
		cfg.KVMount = "nosuchmount"
		s := e.open(cfg)
		_, err := s.List(ctx, "bob")
		oneLine(err)
		if !errors.Is(err, vaultcfg.ErrMountNotFound) || !strings.Contains(err.Error(), `"nosuchmount"`) {
			t.Errorf("List() on a missing mount = %v, want ErrMountNotFound naming it", err)
		}
		cfg = e.config(e.v.RootToken())
		cfg.TransitMount = "notransit"
		s = e.open(cfg)
		key := rsaKey(t, 2)
		_, err = s.Put(ctx, "bob", []*x509.Certificate{newCert(t, key, "b@x", time.Now())}, key, keystore.PutOptions{Transit: true})
		oneLine(err)
		if !errors.Is(err, vaultcfg.ErrMountNotFound) {
			t.Errorf("Put(transit) on a missing mount = %v, want ErrMountNotFound", err)
		}
	})
	t.Run("kv version 1", func(t *testing.T) {
		e.v.MustRequest("POST", "sys/mounts/kv1", `{"type":"kv","options":{"version":"1"}}`)
		cfg := e.config(e.v.RootToken())
		cfg.KVMount = "kv1"
		_, err := vaultcfg.Open(ctx, cfg)
		oneLine(err)
		if !errors.Is(err, vaultcfg.ErrMountNotFound) || !strings.Contains(err.Error(), "kv version 2") {
			t.Errorf("Open(kv v1 mount) = %v, want an error asking for kv version 2", err)
		}
	})
	t.Run("permission denied", func(t *testing.T) {
		e.v.MustRequest("PUT", "sys/policy/alice", `{"policy":"path \"secret/data/smimeproxy/alice/*\" { capabilities = [\"read\"] }\npath \"secret/metadata/smimeproxy/alice\" { capabilities = [\"list\"] }\npath \"secret/metadata/smimeproxy/alice/*\" { capabilities = [\"list\"] }"}`)
		var tok struct {
			Auth struct {
				ClientToken string `json:"client_token"`
			} `json:"auth"`
		}
		json.Unmarshal(e.v.MustRequest("POST", "auth/token/create", `{"policies":["alice"],"ttl":"10m"}`), &tok)
		e.secrets = append(e.secrets, tok.Auth.ClientToken)
		s := e.open(e.config(tok.Auth.ClientToken))
		if _, err := s.List(ctx, "alice"); err != nil {
			t.Fatalf("List(own user) = %v", err)
		}
		_, err := s.Lookup(ctx, "bob", nil)
		oneLine(err)
		if !errors.Is(err, vaultcfg.ErrPermissionDenied) || !strings.Contains(err.Error(), "secret/metadata/smimeproxy/bob") {
			t.Errorf("Lookup(other user) = %v, want ErrPermissionDenied naming the path", err)
		}
	})
	t.Run("sealed", func(t *testing.T) {
		v2 := testenv.StartVault(t)
		s := e.open(vaultcfg.Config{Addr: v2.Addr(), Token: v2.RootToken(), Logger: e.logger})
		v2.MustRequest("PUT", "sys/seal", "")
		_, err := s.List(ctx, "bob")
		oneLine(err)
		if !errors.Is(err, vaultcfg.ErrSealed) || !strings.Contains(err.Error(), "sealed") {
			t.Errorf("List() on a sealed vault = %v, want ErrSealed", err)
		}
	})
}

// TestConcurrentLookups: many sessions looking up at once (cold cache, then warm) all get the key.
func TestConcurrentLookups(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.open(e.config(e.v.RootToken()))
	key := rsaKey(t, 0)
	cert := newCert(t, key, "frank@example.com", time.Now())
	if _, err := s.Put(ctx, "frank", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	ids := cms.RecipientIDsOf(cert)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys, err := s.Lookup(ctx, "frank", ids)
			if err == nil && len(keys) != 1 {
				err = errors.New("key not found")
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Lookup() = %v", err)
	}
}

// TestTransitToKV: putting a Transit key again without Transit stores it in KV and deletes the Transit key.
func TestTransitToKV(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.open(e.config(e.v.RootToken()))
	key := rsaKey(t, 2)
	e.addKey(key)
	cert := newCert(t, key, "hal@example.com", time.Now())
	if _, err := s.Put(ctx, "hal", []*x509.Certificate{cert}, key, keystore.PutOptions{Transit: true}); err != nil {
		t.Fatal(err)
	}
	keys, err := s.Lookup(ctx, "hal", cms.RecipientIDsOf(cert))
	if err != nil || len(keys) != 1 {
		t.Fatalf("Lookup() = %v, %v", keys, err)
	}
	name := keys[0].Private.(*vaultcfg.TransitKey).Name()
	e.v.MustRequest("GET", "transit/keys/"+name, "")
	entry, err := s.Put(ctx, "hal", []*x509.Certificate{cert}, key, keystore.PutOptions{})
	if err != nil || entry.Storage != keystore.StorageKV {
		t.Fatalf("Put(kv) after transit = %+v, %v", entry, err)
	}
	if _, err := e.v.Request("GET", "transit/keys/"+name, ""); err == nil {
		t.Error("transit key still exists after moving the key to KV")
	}
	keys, err = s.Lookup(ctx, "hal", cms.RecipientIDsOf(cert))
	if err != nil || len(keys) != 1 {
		t.Fatalf("Lookup() after move = %v, %v", keys, err)
	}
	if k, ok := keys[0].Private.(*rsa.PrivateKey); !ok || !k.Equal(key) {
		t.Errorf("Lookup() after move: private %T, want the RSA key from KV", keys[0].Private)
	}
}
