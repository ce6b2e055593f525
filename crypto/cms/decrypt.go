package cms

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Content-encryption algorithms (RFC 3565 section 4.1, RFC 3370 section 5.1, RFC 5084 section 3,
// RFC 8103 section 3).
var (
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidAES128GCM  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}
	oidAES192GCM  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 26}
	oidAES256GCM  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
	oidChaCha20   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 18}
)

type contentKind int

const (
	contentCBC contentKind = iota + 1
	contentGCM
	contentChaCha
)

type contentAlgo struct {
	oid    asn1.ObjectIdentifier
	name   string
	keyLen int
	kind   contentKind
	des    bool
}

var contentAlgos = []contentAlgo{
	{oidAES128CBC, "aes-128-cbc", 16, contentCBC, false},
	{oidAES192CBC, "aes-192-cbc", 24, contentCBC, false},
	{oidAES256CBC, "aes-256-cbc", 32, contentCBC, false},
	{oidDESEDE3CBC, "3des-cbc", 24, contentCBC, true},
	{oidAES128GCM, "aes-128-gcm", 16, contentGCM, false},
	{oidAES192GCM, "aes-192-gcm", 24, contentGCM, false},
	{oidAES256GCM, "aes-256-gcm", 32, contentGCM, false},
	{oidChaCha20, "chacha20-poly1305", 32, contentChaCha, false},
}

// Decrypt decrypts the content with the private key belonging to cert; cert selects the RecipientInfo (see
// RecipientID.Matches). key is a crypto.Decrypter whose Public is an *rsa.PublicKey (key transport, possibly a
// remote key such as Vault Transit), or a KeyAgreer (EC, X25519, X448 key agreement); *rsa.PrivateKey,
// *ecdsa.PrivateKey and *ecdh.PrivateKey are accepted directly.
//
// It fails with ErrNoRecipient when no RecipientInfo names cert, ErrUnsupported for algorithms this package
// does not implement or a key of the wrong type, ErrKeyOperation when the key itself fails (a remote store
// being unreachable), and ErrDecryption for every failure that depends on secret data (bad padding, failed
// key unwrap, wrong MAC), without telling which.
//
// When the Envelope owns its buffer (BER input rewritten by Parse, or ParseOwned) the content is decrypted in
// place and the returned plaintext aliases that buffer; such an Envelope can then not be decrypted again.
func (e *Envelope) Decrypt(cert *x509.Certificate, key crypto.PrivateKey) ([]byte, Info, error) {
	var info Info
	if e.spent {
		return nil, info, fmt.Errorf("%w: content already decrypted in place", ErrDecryption)
	}
	var ri *recipientInfo
	for i := range e.recipients {
		if e.recipients[i].id.Matches(cert) {
			ri = &e.recipients[i]
			break
		}
	}
	if ri == nil {
		return nil, info, ErrNoRecipient
	}
	var calg *contentAlgo
	for i := range contentAlgos {
		if contentAlgos[i].oid.Equal(e.contentAlg.oid) {
			calg = &contentAlgos[i]
		}
	}
	if calg == nil {
		return nil, info, fmt.Errorf("%w: content encryption algorithm %v", ErrUnsupported, e.contentAlg.oid)
	}
	// RFC 5083 section 1: AuthEnvelopedData needs an authenticated cipher; RFC 5084 section 1 / RFC 8103
	// section 1: GCM and ChaCha20-Poly1305 are only for AuthEnvelopedData.
	if (calg.kind == contentCBC) == e.auth {
		container := "enveloped-data"
		if e.auth {
			container = "auth-enveloped-data"
		}
		return nil, info, fmt.Errorf("%w: %s in %s", ErrUnsupported, calg.name, container)
	}
	info.ContentCipher = calg.name
	var cek []byte
	var err error
	switch ri.kind {
	case kindKeyTrans:
		cek, info.KeyAlgorithm, err = keyTransport(ri, key, calg.keyLen)
	case kindKeyAgree:
		cek, info.KeyAlgorithm, err = keyAgreement(ri, key)
	}
	if err != nil {
		return nil, info, err
	}
	if len(cek) != calg.keyLen {
		return nil, info, ErrDecryption
	}
	var pt []byte
	switch calg.kind {
	case contentCBC:
		pt, err = e.decryptCBC(calg, cek)
	default:
		pt, err = e.decryptAEAD(calg, cek)
		info.Authenticated = err == nil
	}
	if err != nil {
		return nil, info, err
	}
	return pt, info, nil
}

// decryptCBC decrypts AES-CBC or 3DES-CBC content and strips the RFC 5652 section 6.3 padding.
func (e *Envelope) decryptCBC(calg *contentAlgo, cek []byte) ([]byte, error) {
	var block cipher.Block
	var err error
	if calg.des {
		block, err = des.NewTripleDESCipher(cek)
	} else {
		block, err = aes.NewCipher(cek)
	}
	if err != nil {
		return nil, ErrDecryption
	}
	bs := block.BlockSize()
	// The parameters are the IV as an OCTET STRING (RFC 3565 section 4.1, RFC 3370 section 5.1).
	p := cryptobyte.String(e.contentAlg.params)
	var iv cryptobyte.String
	if !p.ReadASN1(&iv, cbasn1.OCTET_STRING) || !p.Empty() || len(iv) != bs {
		return nil, malformed("bad %s parameters", calg.name)
	}
	ct := e.encrypted
	if len(ct) == 0 || len(ct)%bs != 0 {
		return nil, ErrDecryption
	}
	// Check the padding of the last block first, so a failure leaves an owned buffer intact.
	prev := []byte(iv)
	if len(ct) > bs {
		prev = ct[len(ct)-2*bs : len(ct)-bs]
	}
	last := make([]byte, bs)
	cipher.NewCBCDecrypter(block, prev).CryptBlocks(last, ct[len(ct)-bs:])
	padLen, ok := checkPadding(last)
	if !ok {
		return nil, ErrDecryption
	}
	var out []byte
	if e.owned {
		out = ct
		e.spent = true
	} else {
		out = make([]byte, len(ct))
	}
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ct)
	return out[:len(out)-padLen], nil
}

// checkPadding checks the PKCS #7 padding of the final block in constant time (RFC 5652 section 6.3).
func checkPadding(last []byte) (int, bool) {
	n := int(last[len(last)-1])
	good := subtle.ConstantTimeLessOrEq(1, n) & subtle.ConstantTimeLessOrEq(n, len(last))
	for i := 0; i < len(last); i++ {
		inPad := subtle.ConstantTimeLessOrEq(len(last)-i, n)
		eq := subtle.ConstantTimeByteEq(last[i], byte(n))
		good &= subtle.ConstantTimeSelect(inPad, eq, 1)
	}
	return n, good == 1
}

// decryptAEAD decrypts AES-GCM (RFC 5084 section 3.2) or ChaCha20-Poly1305 (RFC 8103 section 3) content of an
// AuthEnvelopedData; the additional data is the DER authAttrs re-tagged as SET OF (RFC 5083 section 2.2).
func (e *Envelope) decryptAEAD(calg *contentAlgo, cek []byte) ([]byte, error) {
	var aead cipher.AEAD
	p := cryptobyte.String(e.contentAlg.params)
	switch calg.kind {
	case contentGCM:
		// GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen INTEGER DEFAULT 12 }
		var seq, nonce cryptobyte.String
		icvLen := int64(12)
		if !p.ReadASN1(&seq, cbasn1.SEQUENCE) || !p.Empty() || !seq.ReadASN1(&nonce, cbasn1.OCTET_STRING) {
			return nil, malformed("bad gcm parameters")
		}
		if !seq.Empty() && (!seq.ReadASN1Integer(&icvLen) || !seq.Empty()) {
			return nil, malformed("bad gcm parameters")
		}
		if icvLen < 12 || icvLen > 16 || int(icvLen) != len(e.mac) || len(nonce) == 0 || len(nonce) > 64 {
			return nil, fmt.Errorf("%w: gcm nonce of %d and tag of %d bytes", ErrUnsupported, len(nonce), icvLen)
		}
		block, err := aes.NewCipher(cek)
		if err != nil {
			return nil, ErrDecryption
		}
		switch {
		case len(nonce) == 12:
			aead, err = cipher.NewGCMWithTagSize(block, int(icvLen))
		case icvLen == 16:
			aead, err = cipher.NewGCMWithNonceSize(block, len(nonce))
		default:
			return nil, fmt.Errorf("%w: gcm with a %d-byte nonce and %d-byte tag", ErrUnsupported, len(nonce), icvLen)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
		}
		return e.open(aead, nonce)
	default:
		// AEADChaCha20Poly1305Nonce ::= OCTET STRING (SIZE(12)); the tag is 16 bytes (RFC 8103 section 3).
		var nonce cryptobyte.String
		if !p.ReadASN1(&nonce, cbasn1.OCTET_STRING) || !p.Empty() || len(nonce) != chacha20poly1305.NonceSize {
			return nil, malformed("bad chacha20-poly1305 parameters")
		}
		if len(e.mac) != chacha20poly1305.Overhead {
			return nil, ErrDecryption
		}
		aead, err := chacha20poly1305.New(cek)
		if err != nil {
			return nil, ErrDecryption
		}
		return e.open(aead, nonce)
	}
}

func (e *Envelope) open(aead cipher.AEAD, nonce []byte) ([]byte, error) {
	var aad []byte
	if len(e.authAttrs) > 0 {
		aad = append([]byte{0x31}, e.authAttrs[1:]...) // [1] IMPLICIT -> SET OF, RFC 5083 section 2.2
	}
	ct := e.encrypted
	var buf []byte
	if e.owned && cap(ct)-len(ct) >= len(e.mac) {
		// The bytes after the ciphertext (the mac and attributes, saved at parse time) make room for the tag.
		buf = append(ct, e.mac...)
		e.spent = true
	} else {
		buf = make([]byte, 0, len(ct)+len(e.mac))
		buf = append(append(buf, ct...), e.mac...)
	}
	pt, err := aead.Open(buf[:0], nonce, buf, aad)
	if err != nil {
		return nil, ErrDecryption
	}
	return pt, nil
}

// keyAgreerOf returns key as a KeyAgreer.
func keyAgreerOf(key crypto.PrivateKey) (KeyAgreer, bool) {
	switch k := key.(type) {
	case KeyAgreer:
		return k, true
	case *ecdh.PrivateKey:
		return ecdhAgreer{k}, true
	case *ecdsa.PrivateKey:
		ek, err := k.ECDH()
		if err != nil {
			return nil, false
		}
		return ecdhAgreer{ek}, true
	}
	return nil, false
}

type ecdhAgreer struct{ k *ecdh.PrivateKey }

func (a ecdhAgreer) Public() crypto.PublicKey { return a.k.PublicKey() }

func (a ecdhAgreer) SharedSecret(peer []byte) ([]byte, error) {
	pub, err := a.k.Curve().NewPublicKey(peer)
	if err != nil {
		return nil, err
	}
	return a.k.ECDH(pub)
}

var errKeyType = errors.New("key type does not fit the recipient info")

// curveName names the curve of a KeyAgreer's public key: "p256", "p384", "p521", "x25519", "x448".
func curveName(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *ecdh.PublicKey:
		switch p.Curve() {
		case ecdh.P256():
			return "p256"
		case ecdh.P384():
			return "p384"
		case ecdh.P521():
			return "p521"
		case ecdh.X25519():
			return "x25519"
		}
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256():
			return "p256"
		case elliptic.P384():
			return "p384"
		case elliptic.P521():
			return "p521"
		}
	case X448PublicKey:
		return "x448"
	}
	return ""
}
