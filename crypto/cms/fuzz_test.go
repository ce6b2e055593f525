package cms

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"path/filepath"
	"testing"
)

// fuzzSeeds adds every small fixture as a seed; larger seeds live in testdata/fuzz/<FuzzName>.
func fuzzSeeds(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(fixturesDir, "*.der"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, name := range files {
		if b := readFile(f, name); len(b) < 8<<10 {
			f.Add(b)
		}
	}
}

func isSentinel(err error) bool {
	for _, s := range []error{ErrNotEnveloped, ErrNotSigned, ErrNoRecipient, ErrDecryption, ErrUnsupported, ErrMalformed, ErrTooLarge, ErrKeyOperation} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzParse: the BER reader and CMS parser never panic, fail only with this package's errors, and the BER to
// DER rewrite is idempotent (its output is accepted as DER without another copy).
func FuzzParse(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		if d, _, err := toDER(in); err == nil {
			d2, copied, err := toDER(d)
			if err != nil || copied || !bytes.Equal(d, d2) {
				t.Fatalf("toDER not idempotent: copied=%v err=%v", copied, err)
			}
		} else if !isSentinel(err) {
			t.Fatalf("toDER error %v is not a package error", err)
		}
		env, err := Parse(in)
		if err != nil && !isSentinel(err) {
			t.Fatalf("Parse error %v is not a package error", err)
		}
		if err == nil {
			_ = env.Recipients()
		}
		// PeekRecipients reads what Parse reads, from any prefix.
		for _, n := range []int{len(in), len(in) / 2} {
			ids, perr := PeekRecipients(in[:n])
			if perr != nil && !isSentinel(perr) {
				t.Fatalf("PeekRecipients error %v is not a package error", perr)
			}
			if n == len(in) && err == nil && (perr != nil || len(ids) != len(env.Recipients())) {
				t.Fatalf("PeekRecipients = %d ids, %v; Parse found %d", len(ids), perr, len(env.Recipients()))
			}
		}
		if _, err := ContentType(in); err != nil && !isSentinel(err) {
			t.Fatalf("ContentType error %v", err)
		}
		if c, err := SignedContent(in); err != nil && !isSentinel(err) {
			t.Fatalf("SignedContent error %v", err)
		} else if len(c) > len(in) {
			t.Fatal("SignedContent longer than input")
		}
		if !bytes.Equal(in, orig) {
			t.Fatal("Parse modified its input")
		}
	})
}

// FuzzDecrypt: decrypting mutated messages with every test key never panics, fails only with this package's
// errors, and never returns more plaintext than there was input.
func FuzzDecrypt(f *testing.F) {
	fuzzSeeds(f)
	who := []string{"rsa", "p256", "p384", "x25519", "x448"}
	type kp struct {
		cert *x509.Certificate
		key  crypto.PrivateKey
	}
	certs := make(map[string]kp)
	for _, w := range who {
		certs[w] = kp{loadCert(f, w), loadKey(f, w)}
	}
	// Variants OpenSSL cannot make, built by the test encryptor.
	msg := []byte("fuzz seed")
	f.Add(testEncrypt(f, msg, encOptions{content: oidChaCha20, authAttrs: true}, encRecipient{cert: certs["x25519"].cert}))
	f.Add(testEncrypt(f, msg, encOptions{content: oidAES256GCM, ber: true, chunk: 3}, encRecipient{cert: certs["x448"].cert, ski: true}))
	f.Add(testEncrypt(f, msg, encOptions{content: oidAES128CBC}, encRecipient{cert: certs["p384"].cert, ukm: []byte("u")},
		encRecipient{cert: certs["rsa"].cert}))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, w := range who {
			env, err := Parse(in)
			if err != nil {
				return
			}
			pt, _, err := env.Decrypt(certs[w].cert, certs[w].key)
			if err != nil && !isSentinel(err) {
				t.Fatalf("Decrypt error %v is not a package error", err)
			}
			if len(pt) > len(in) {
				t.Fatal("plaintext longer than input")
			}
		}
	})
}
