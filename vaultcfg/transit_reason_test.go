package vaultcfg_test

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
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// fixedKeyring hands smime the keys a Lookup returned.
type fixedKeyring []keystore.Key

func (k fixedKeyring) KeysFor(context.Context, []cms.RecipientID) ([]smime.Key, error) {
	var out []smime.Key
	for _, key := range k {
		out = append(out, smime.Key{Cert: key.Cert, Private: key.Private})
	}
	return out, nil
}

// opensslEnvelope encrypts a short message to cert with openssl (AES-256-CBC; RSA-OAEP-SHA-256 when oaep, else
// PKCS #1 v1.5) and returns the DER EnvelopedData.
func opensslEnvelope(t *testing.T, cert *x509.Certificate, oaep bool) []byte {
	t.Helper()
	dir := t.TempDir()
	certFile, in, out := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "msg"), filepath.Join(dir, "msg.p7m")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600)
	os.WriteFile(in, []byte("Content-Type: text/plain\r\n\r\nthe secret meeting is at noon\r\n"), 0o600)
	args := []string{"cms", "-encrypt", "-binary", "-aes256", "-in", in, "-out", out, "-outform", "DER", "-recip", certFile}
	if oaep {
		args = append(args, "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha256")
	}
	if b, err := exec.Command(testenv.LookPath(t, "openssl"), args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, b)
	}
	der, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// smimeMessage wraps DER EnvelopedData into an application/pkcs7-mime message (RFC 8551 section 3.3).
func smimeMessage(der []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: a@example.com\r\nTo: dora@example.com\r\nSubject: t\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(der)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return b.Bytes()
}

// corruptEncryptedKey flips a byte inside the RSA-2048 encryptedKey (OCTET STRING of 256 bytes) of der.
func corruptEncryptedKey(t *testing.T, der []byte) []byte {
	t.Helper()
	hdr := []byte{0x04, 0x82, 0x01, 0x00}
	i := bytes.Index(der, hdr)
	if i < 0 || bytes.Contains(der[i+1:], hdr) {
		t.Fatal("no single 256-byte encryptedKey in the envelope")
	}
	out := bytes.Clone(der)
	out[i+len(hdr)+100] ^= 0x5a
	return out
}

// TestTransitReasons: with a key in Transit, a message whose wrapped content-encryption key is corrupt, and a
// Transit key that is missing or holds other key material, are "corrupt" (for PKCS #1 v1.5 and for OAEP);
// only Vault being unreachable is "key-unavailable".
func TestTransitReasons(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.open(e.config(e.v.RootToken()))
	key := rsaKey(t, 0)
	e.addKey(key)
	cert := newCert(t, key, "dora@example.com", time.Now())
	if _, err := s.Put(ctx, "dora", []*x509.Certificate{cert}, key, keystore.PutOptions{Transit: true}); err != nil {
		t.Fatal(err)
	}
	other := rsaKey(t, 1) // a Transit key with other material, for the "wrong key" case
	e.addKey(other)
	otherEntry, err := s.Put(ctx, "olga", []*x509.Certificate{newCert(t, other, "olga@example.com", time.Now())}, other, keystore.PutOptions{Transit: true})
	if err != nil {
		t.Fatal(err)
	}
	counter := &vaultErrors{} // Config.Metrics: rejected ciphertexts and keys are not failed Vault requests
	lookup := func() fixedKeyring {
		t.Helper()
		cfg := e.config(e.v.RootToken())
		cfg.Metrics = counter
		s := e.open(cfg) // a fresh store: no cached keys
		keys, err := s.Lookup(ctx, "dora", cms.RecipientIDsOf(cert))
		if err != nil || len(keys) != 1 {
			t.Fatalf("Lookup(dora) = %v, %v", keys, err)
		}
		if _, ok := keys[0].Private.(*vaultcfg.TransitKey); !ok {
			t.Fatalf("dora's key is %T, want a Transit key", keys[0].Private)
		}
		return fixedKeyring(keys)
	}
	check := func(name string, kr fixedKeyring, msg []byte, wantStatus smime.Status, wantReason smime.Reason) {
		t.Helper()
		res := smime.Process(context.Background(), msg, kr, nil)
		// A PKCS #1 v1.5 key transport that fails yields a random content key (implicit rejection, RFC 3218
		// section 2.3.2), and a CBC body decrypted with it ends in valid padding about once in 256: then the
		// message is "decrypted" to garbage, as in every S/MIME client. Never to the secret.
		if wantReason == smime.ReasonCorrupt && strings.HasPrefix(name, "pkcs1v15 ") && res.Status == smime.Decrypted &&
			!bytes.Contains(res.Served, []byte("secret meeting")) {
			return
		}
		if res.Status != wantStatus || res.Reason != wantReason {
			t.Errorf("%s: status %v reason %q, want %v %q", name, res.Status, res.Reason, wantStatus, wantReason)
		}
	}
	kr := lookup()
	msgs := map[string][2][]byte{}
	for _, padding := range []string{"pkcs1v15", "oaep"} {
		der := opensslEnvelope(t, cert, padding == "oaep")
		msgs[padding] = [2][]byte{smimeMessage(der), smimeMessage(corruptEncryptedKey(t, der))}
		check(padding+" intact", kr, msgs[padding][0], smime.Decrypted, "")
		check(padding+" corrupt wrapped key", kr, msgs[padding][1], smime.Undecryptable, smime.ReasonCorrupt)
	}

	// The KV entry names a Transit key holding other key material.
	var sec struct {
		Data struct {
			Data map[string]any `json:"data"`
		} `json:"data"`
	}
	p := "secret/data/smimeproxy/dora/" + keystore.IDOf(cert)
	json.Unmarshal(e.v.MustRequest("GET", p, ""), &sec)
	orig := sec.Data.Data["transit_key"].(string)
	olga := lookupTransitName(t, e, "olga", otherEntry.ID)
	writeTransitName := func(name string) {
		sec.Data.Data["transit_key"] = name
		b, _ := json.Marshal(map[string]any{"data": sec.Data.Data})
		e.v.MustRequest("POST", p, string(b))
	}
	writeTransitName(olga)
	kr = lookup()
	for _, padding := range []string{"pkcs1v15", "oaep"} {
		check(padding+" wrong transit key material", kr, msgs[padding][0], smime.Undecryptable, smime.ReasonCorrupt)
	}
	// The KV entry names a Transit key that does not exist.
	writeTransitName(strings.TrimSuffix(orig, keystore.IDOf(cert)) + "0000")
	kr = lookup()
	for _, padding := range []string{"pkcs1v15", "oaep"} {
		check(padding+" missing transit key", kr, msgs[padding][0], smime.Undecryptable, smime.ReasonCorrupt)
	}
	writeTransitName(orig)

	if n := counter.n.Load(); n != 0 {
		t.Errorf("%d Vault errors counted for messages and keys Transit rejected, want 0", n)
	}

	// Vault unreachable: the key is unavailable, not the message corrupt.
	kr = lookup()
	e.v.Stop()
	for _, padding := range []string{"pkcs1v15", "oaep"} {
		check(padding+" vault down", kr, msgs[padding][0], smime.Undecryptable, smime.ReasonKeyUnavailable)
	}
	if n := counter.n.Load(); n != 2 {
		t.Errorf("%d Vault errors counted for two Transit calls that failed, want 2", n)
	}
	e.v.Restart()
	check("oaep after restart", kr, msgs["oaep"][0], smime.Decrypted, "")

	// The error itself is rsa.ErrDecryption for a rejected ciphertext, and not for an unreachable Vault.
	tk := kr[0].Private.(*vaultcfg.TransitKey)
	if _, err := tk.Decrypt(nil, make([]byte, 256), &rsa.OAEPOptions{Hash: crypto.SHA256}); !errors.Is(err, rsa.ErrDecryption) {
		t.Errorf("Decrypt(garbage, OAEP) = %v, want rsa.ErrDecryption", err)
	}
}

// lookupTransitName returns the Transit key name recorded for user's key id.
func lookupTransitName(t *testing.T, e *env, user, id string) string {
	t.Helper()
	var sec struct {
		Data struct {
			Data map[string]any `json:"data"`
		} `json:"data"`
	}
	json.Unmarshal(e.v.MustRequest("GET", "secret/data/smimeproxy/"+user+"/"+id, ""), &sec)
	name, _ := sec.Data.Data["transit_key"].(string)
	if name == "" {
		t.Fatalf("no transit key recorded for %s/%s", user, id)
	}
	return name
}

// TestLookupSkipsUnparsableSecret: one KV secret whose certificate does not parse is skipped (and logged);
// the user's other keys still work, instead of every message becoming "key-unavailable".
func TestLookupSkipsUnparsableSecret(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.open(e.config(e.v.RootToken()))
	key := rsaKey(t, 2)
	e.addKey(key)
	cert := newCert(t, key, "erin@example.com", time.Now())
	if _, err := s.Put(ctx, "erin", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	e.v.MustRequest("POST", "secret/data/smimeproxy/erin/00ff", `{"data":{"certificate_chain":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n","storage":"kv"}}`)
	keys, err := e.open(e.config(e.v.RootToken())).Lookup(ctx, "erin", cms.RecipientIDsOf(cert))
	if err != nil || len(keys) != 1 {
		t.Fatalf("Lookup() = %d keys, %v; want the good key and no error", len(keys), err)
	}
	if !strings.Contains(e.log.String(), "skipping unusable key") || !strings.Contains(e.log.String(), "00ff") {
		t.Errorf("the unusable secret was not logged:\n%s", e.log.String())
	}
}

// TestTransitKeyBoundContext: a Transit key comes from Lookup bound to the lookup's context (the request's, as
// decrypt passes it), stops its Vault call when that context ends, and works like the key itself while it lives.
func TestTransitKeyBoundContext(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.open(e.config(e.v.RootToken()))
	key := rsaKey(t, 0)
	e.addKey(key)
	cert := newCert(t, key, "dora@example.com", time.Now())
	if _, err := s.Put(ctx, "dora", []*x509.Certificate{cert}, key, keystore.PutOptions{Transit: true}); err != nil {
		t.Fatal(err)
	}
	keys, err := s.Lookup(ctx, "dora", cms.RecipientIDsOf(cert))
	if err != nil || len(keys) != 1 {
		t.Fatalf("Lookup(dora) = %v, %v", keys, err)
	}
	cek := []byte("0123456789abcdef0123456789abcdef")
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, cek, nil)
	if err != nil {
		t.Fatal(err)
	}
	oaep := &rsa.OAEPOptions{Hash: crypto.SHA256}

	live := keys[0].Private.(crypto.Decrypter)
	if got, err := live.Decrypt(rand.Reader, ct, oaep); err != nil || !bytes.Equal(got, cek) {
		t.Fatalf("bound key, live context: Decrypt() = %x, %v", got, err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	// The keys are cached now: Lookup answers without Vault, and binds them to the dead context all the same.
	keys, err = s.Lookup(gone, "dora", cms.RecipientIDsOf(cert))
	if err != nil || len(keys) != 1 {
		t.Fatalf("Lookup(dora, cancelled context) from the cache = %v, %v", keys, err)
	}
	dead := keys[0].Private.(crypto.Decrypter)
	start := time.Now()
	if _, err := dead.Decrypt(rand.Reader, ct, oaep); !errors.Is(err, context.Canceled) {
		t.Errorf("bound key, cancelled context: Decrypt() = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancelled call took %v", d)
	}
}
