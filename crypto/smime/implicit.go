package smime

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"io"
)

// Deterministic implicit rejection for RSA PKCS #1 v1.5 key transport.
//
// Package cms asks the key for the content-encryption key with rsa.PKCS1v15DecryptOptions.SessionKeyLen, so a
// bad padding yields a key drawn from the rand argument instead of an error (no Bleichenbacher oracle, RFC 3218
// section 2.3.2). With a truly random key, a message whose wrapped key is corrupt decrypts to garbage about
// once in 256 tries (when the CBC padding happens to look right) and is "corrupt" the other times: the served
// bytes would change from fetch to fetch (RFC 9051 requires a message's size and content to be stable), and
// the changing outcome itself leaks that the padding was bad. keyFor therefore hands cms the key wrapped so
// that rand is a pseudo-random function of the ciphertext under a secret (the implicit rejection of
// draft-irtf-cfrg-rsa-guidance section 7.2): the same wrong key every time.

// processSecret keys the rejection function of keys whose private exponent is not at hand (remote
// Decrypters): stable for the life of the process.
var processSecret = func() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("smime: no randomness: " + err.Error())
	}
	return b
}()

// keyFor returns the key to hand to cms: RSA keys wrapped as implicitRejection, others unchanged.
func keyFor(k crypto.PrivateKey) crypto.PrivateKey {
	d, ok := k.(crypto.Decrypter)
	if !ok {
		return k
	}
	pub, ok := d.Public().(*rsa.PublicKey)
	if !ok {
		return k
	}
	var kdk []byte
	if rk, ok := k.(*rsa.PrivateKey); ok && rk.D != nil {
		h := sha256.New()
		h.Write([]byte("smimeproxy pkcs1v15 implicit rejection"))
		h.Write(rk.D.Bytes())
		kdk = h.Sum(nil)
	} else {
		m := hmac.New(sha256.New, processSecret)
		m.Write(pub.N.Bytes())
		kdk = m.Sum(nil)
	}
	return implicitRejection{Decrypter: d, kdk: kdk}
}

// implicitRejection is a crypto.Decrypter whose rand argument is replaced by prf(kdk, ciphertext).
type implicitRejection struct {
	crypto.Decrypter
	kdk []byte
}

// Decrypt implements crypto.Decrypter.
func (r implicitRejection) Decrypt(_ io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return r.Decrypter.Decrypt(&prfReader{key: r.kdk, msg: ciphertext}, ciphertext, opts)
}

// prfReader yields HMAC-SHA-256(key, counter || msg) for counter = 0, 1, ...
type prfReader struct {
	key, msg []byte
	counter  uint32
	buf      []byte
}

func (p *prfReader) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		if len(p.buf) == 0 {
			m := hmac.New(sha256.New, p.key)
			var c [4]byte
			binary.BigEndian.PutUint32(c[:], p.counter)
			p.counter++
			m.Write(c[:])
			m.Write(p.msg)
			p.buf = m.Sum(nil)
		}
		k := copy(b[n:], p.buf)
		p.buf = p.buf[k:]
		n += k
	}
	return n, nil
}
