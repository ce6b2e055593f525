package keystore

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

const tbDir = "../testdata/thunderbird"

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openssl(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(testenv.LookPath(t, "openssl"), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v: %s", args, err, stderr.String())
	}
	return out
}

// TestParseKeyFileThunderbird: NSS PKCS#12 files (BER throughout, PBES2 with AES, RFC 7292) parse, the leaf is
// the certificate of the key and comes first.
func TestParseKeyFileThunderbird(t *testing.T) {
	for _, c := range []struct{ file, cn string }{
		{"Alice.p12", "Alice"}, {"Bob.p12", "Bob"}, {"Dave.p12", "Dave"}, {"Eve.p12", "Eve"}, {"Fran.p12", "Fran"},
		{"Alice-ec.p12", "Alice"}, {"Fran-ec.p12", "Fran"},
	} {
		data := readFile(t, filepath.Join(tbDir, c.file))
		chain, key, err := ParseKeyFile(data, []byte("nss"))
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		if !KeyMatches(chain[0], key) || !strings.Contains(chain[0].Subject.CommonName, c.cn) {
			t.Errorf("%s: leaf %q does not hold the key", c.file, chain[0].Subject)
		}
		// openssl agrees on the leaf.
		want := openssl(t, nil, "pkcs12", "-in", filepath.Join(tbDir, c.file), "-passin", "pass:nss", "-nokeys", "-clcerts")
		if !bytes.Contains(want, []byte(strings.TrimSpace(pemOf(chain[0].Raw)))) {
			t.Errorf("%s: leaf differs from openssl's -clcerts", c.file)
		}
		if _, _, err := ParseKeyFile(data, []byte("wrong")); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("%s with a wrong password: %v, want ErrWrongPassword", c.file, err)
		}
	}
}

func pemOf(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestParseKeyFileOpenSSL: PKCS#12 as OpenSSL 3 writes it (DER; PBES2 AES-256 default, and the old
// pbeWithSHAAnd3-KeyTripleDES-CBC) and the PEM key forms.
func TestParseKeyFileOpenSSL(t *testing.T) {
	dir := t.TempDir()
	bob := filepath.Join(tbDir, "Bob.p12")
	keyPEM := openssl(t, nil, "pkcs12", "-in", bob, "-passin", "pass:nss", "-nodes", "-nocerts")
	certPEM := openssl(t, nil, "pkcs12", "-in", bob, "-passin", "pass:nss", "-nokeys", "-clcerts")
	caPEM := readFile(t, filepath.Join(tbDir, "TestCA.pem"))
	keyFile, certFile := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem")
	os.WriteFile(keyFile, keyPEM, 0o600)
	os.WriteFile(certFile, certPEM, 0o600)

	for _, c := range []struct {
		name string
		args []string
	}{
		{"aes", nil},
		{"3des", []string{"-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"}},
	} {
		p12 := openssl(t, nil, append([]string{"pkcs12", "-export", "-inkey", keyFile, "-in", certFile, "-passout", "pass:pw"}, c.args...)...)
		chain, key, err := ParseKeyFile(p12, []byte("pw"))
		if err != nil || !KeyMatches(chain[0], key) {
			t.Errorf("openssl pkcs12 %s: %v", c.name, err)
		}
		if _, _, err := ParseKeyFile(p12, []byte("nss")); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("openssl pkcs12 %s, wrong password: %v", c.name, err)
		}
		// The BER reader handles the same DER files.
		certs, keys, err := readBERPKCS12(p12, []byte("pw"))
		if err != nil || len(certs) != 1 || len(keys) != 1 || !KeyMatches(certs[0], keys[0]) {
			t.Errorf("readBERPKCS12 %s: %d certs %d keys, %v", c.name, len(certs), len(keys), err)
		}
		if _, _, err := readBERPKCS12(p12, []byte("nss")); !errors.Is(err, ErrWrongPassword) {
			t.Errorf("readBERPKCS12 %s, wrong password: %v", c.name, err)
		}
	}

	pkcs1 := openssl(t, keyPEM, "rsa", "-traditional")
	for _, c := range []struct {
		name  string
		files [][]byte
	}{
		{"pkcs8 + cert in one file", [][]byte{append(append([]byte(nil), keyPEM...), certPEM...)}},
		{"ca first, then key, then leaf", [][]byte{append(append(append([]byte(nil), caPEM...), keyPEM...), certPEM...)}},
		{"pkcs1 + cert", [][]byte{pkcs1, certPEM}},
		{"cert + key files", [][]byte{certPEM, caPEM, keyPEM}},
	} {
		chain, key, err := MergeKeyFiles(c.files, nil)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if _, ok := key.(*rsa.PrivateKey); !ok || !KeyMatches(chain[0], key) || chain[0].Subject.CommonName != "Bob" {
			t.Errorf("%s: leaf %q, key %T", c.name, chain[0].Subject, key)
		}
		if strings.Contains(c.name, "ca") && len(chain) != 2 {
			t.Errorf("%s: chain of %d, want 2", c.name, len(chain))
		}
	}

	// SEC1 EC key with its certificate.
	ec := filepath.Join(tbDir, "Alice-ec.p12")
	ecKey := openssl(t, openssl(t, nil, "pkcs12", "-in", ec, "-passin", "pass:nss", "-nodes", "-nocerts"), "ec")
	ecCert := openssl(t, nil, "pkcs12", "-in", ec, "-passin", "pass:nss", "-nokeys", "-clcerts")
	if !bytes.Contains(ecKey, []byte("EC PRIVATE KEY")) {
		t.Fatalf("openssl ec did not write SEC1: %.40s", ecKey)
	}
	chain, key, err := MergeKeyFiles([][]byte{ecKey, ecCert}, nil)
	if _, ok := key.(*ecdsa.PrivateKey); err != nil || !ok || !KeyMatches(chain[0], key) {
		t.Errorf("SEC1: %T %v", key, err)
	}
}

// TestParseKeyFileCurves: X25519 and X448 PKCS#8 keys (RFC 8410) with their certificates.
func TestParseKeyFileCurves(t *testing.T) {
	keys := "../crypto/cms/testdata/keys"
	for _, name := range []string{"x25519", "x448", "p256", "rsa"} {
		key := readFile(t, filepath.Join(keys, name+".key"))
		cert := readFile(t, filepath.Join(keys, name+".pem"))
		chain, k, err := MergeKeyFiles([][]byte{key, cert}, nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		switch name {
		case "x25519":
			if _, ok := k.(*ecdh.PrivateKey); !ok {
				t.Errorf("x25519: key %T", k)
			}
		case "x448":
			if _, ok := k.(cms.KeyAgreer); !ok {
				t.Errorf("x448: key %T", k)
			}
		}
		if !KeyMatches(chain[0], k) {
			t.Errorf("%s: leaf does not match", name)
		}
	}
}

func TestParseKeyFileErrors(t *testing.T) {
	bob := filepath.Join(tbDir, "Bob.p12")
	keyPEM := openssl(t, nil, "pkcs12", "-in", bob, "-passin", "pass:nss", "-nodes", "-nocerts")
	certPEM := openssl(t, nil, "pkcs12", "-in", bob, "-passin", "pass:nss", "-nokeys", "-clcerts")
	aliceCert := openssl(t, nil, "pkcs12", "-in", filepath.Join(tbDir, "Alice.p12"), "-passin", "pass:nss", "-nokeys", "-clcerts")
	encrypted := openssl(t, keyPEM, "pkey", "-aes256", "-passout", "pass:x")
	for _, c := range []struct {
		name  string
		files [][]byte
		want  error
		msg   string
	}{
		{"certificate only", [][]byte{certPEM}, ErrNoPrivateKey, "no private key in file"},
		{"key only", [][]byte{keyPEM}, ErrNoCertificate, "no certificate"},
		{"mismatch", [][]byte{keyPEM, aliceCert}, ErrKeyMismatch, "key does not match certificate"},
		{"two keys", [][]byte{keyPEM, keyPEM, certPEM}, ErrKeyFile, "2 private keys"},
		{"encrypted pkcs8", [][]byte{encrypted, certPEM}, ErrKeyFile, "encrypted"},
		{"garbage", [][]byte{[]byte("hello")}, ErrKeyFile, "neither PEM nor"},
		{"empty", [][]byte{nil}, ErrKeyFile, "empty"},
		{"broken DER", [][]byte{{0x30, 0x80, 0x02}}, ErrKeyFile, "keystore"},
		{"bad pem block", [][]byte{[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}, ErrKeyFile, "certificate"},
	} {
		_, _, err := MergeKeyFiles(c.files, nil)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", c.name, err, c.want, c.msg)
		}
		if err != nil && (strings.Contains(err.Error(), "PRIVATE") || strings.Contains(err.Error(), "\n")) {
			t.Errorf("%s: error %q is multi-line or shows key material", c.name, err)
		}
	}
}
