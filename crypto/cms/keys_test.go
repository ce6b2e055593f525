package cms

//lint:file-ignore SA1019 tests build RSA PKCS #1 v1.5 key transport, what most S/MIME senders use (RFC 8551 section 2.3)

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"io"
	"path/filepath"
	"testing"
)

// remoteDecrypter stands in for a key held elsewhere (Vault Transit): only crypto.Decrypter, optionally
// failing like an unreachable store.
type remoteDecrypter struct {
	k    *rsa.PrivateKey
	fail error
	opts []crypto.DecrypterOpts
}

func (r *remoteDecrypter) Public() crypto.PublicKey { return r.k.Public() }

func (r *remoteDecrypter) Decrypt(rand io.Reader, ct []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	r.opts = append(r.opts, opts)
	if r.fail != nil {
		return nil, r.fail
	}
	return r.k.Decrypt(rand, ct, opts)
}

// remoteAgreer is a KeyAgreer that is not one of the built-in types.
type remoteAgreer struct {
	k    *ecdh.PrivateKey
	fail error
}

func (r *remoteAgreer) Public() crypto.PublicKey { return r.k.PublicKey() }

func (r *remoteAgreer) SharedSecret(peer []byte) ([]byte, error) {
	if r.fail != nil {
		return nil, r.fail
	}
	pub, err := r.k.Curve().NewPublicKey(peer)
	if err != nil {
		return nil, err
	}
	return r.k.ECDH(pub)
}

var errStoreDown = errors.New("key store unreachable")

// TestRemoteKeys: keys known only by interface work, receive the options that keep PKCS #1 v1.5 free of an
// oracle (SessionKeyLen) and the OAEP parameters, and their own failures are ErrKeyOperation, not
// ErrDecryption.
func TestRemoteKeys(t *testing.T) {
	rsaKey := loadKey(t, "rsa").(*rsa.PrivateKey)
	for _, c := range []struct {
		fixture  string
		wantOpts crypto.DecrypterOpts
	}{
		{"rsa-v15-aes192-cbc", &rsa.PKCS1v15DecryptOptions{SessionKeyLen: 24}},
		{"rsa-oaep-sha256-label-aes128-cbc", &rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA256, Label: []byte{1, 2, 3, 4, 5, 6, 7, 8}}},
	} {
		in := fixture(t, c.fixture)
		want := readFile(t, filepath.Join(fixturesDir, c.fixture+".out"))
		r := &remoteDecrypter{k: rsaKey}
		env, _ := Parse(in)
		pt, _, err := env.Decrypt(loadCert(t, "rsa"), r)
		if err != nil || !bytes.Equal(pt, want) {
			t.Fatalf("%s: Decrypt(remote) = %v", c.fixture, err)
		}
		switch w := c.wantOpts.(type) {
		case *rsa.PKCS1v15DecryptOptions:
			if got, ok := r.opts[0].(*rsa.PKCS1v15DecryptOptions); !ok || *got != *w {
				t.Errorf("%s: opts = %#v, want %#v", c.fixture, r.opts[0], w)
			}
		case *rsa.OAEPOptions:
			if got, ok := r.opts[0].(*rsa.OAEPOptions); !ok || got.Hash != w.Hash || got.MGFHash != w.MGFHash || !bytes.Equal(got.Label, w.Label) {
				t.Errorf("%s: opts = %#v, want %#v", c.fixture, r.opts[0], w)
			}
		}
		env, _ = Parse(in)
		_, _, err = env.Decrypt(loadCert(t, "rsa"), &remoteDecrypter{k: rsaKey, fail: errStoreDown})
		if !errors.Is(err, ErrKeyOperation) || !errors.Is(err, errStoreDown) || errors.Is(err, ErrDecryption) {
			t.Errorf("%s: Decrypt(store down) = %v, want ErrKeyOperation wrapping the store's error", c.fixture, err)
		}
		env, _ = Parse(in)
		_, _, err = env.Decrypt(loadCert(t, "rsa"), &remoteDecrypter{k: rsaKey, fail: rsa.ErrDecryption})
		if err != ErrDecryption {
			t.Errorf("%s: Decrypt(rsa.ErrDecryption) = %v, want exactly ErrDecryption", c.fixture, err)
		}
	}

	ecKey, err := loadKey(t, "p256").(*ecdsa.PrivateKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	in := fixture(t, "ecdh-p256-sha256-aes256wrap-aes256-gcm")
	want := readFile(t, filepath.Join(fixturesDir, "ecdh-p256-sha256-aes256wrap-aes256-gcm.out"))
	for _, key := range []crypto.PrivateKey{ecKey, &remoteAgreer{k: ecKey}} {
		env, _ := Parse(in)
		if pt, _, err := env.Decrypt(loadCert(t, "p256"), key); err != nil || !bytes.Equal(pt, want) {
			t.Errorf("Decrypt(%T) = %v", key, err)
		}
	}
	env, _ := Parse(in)
	_, _, err = env.Decrypt(loadCert(t, "p256"), &remoteAgreer{k: ecKey, fail: errStoreDown})
	if !errors.Is(err, ErrKeyOperation) || !errors.Is(err, errStoreDown) {
		t.Errorf("Decrypt(agreer down) = %v, want ErrKeyOperation", err)
	}
}
