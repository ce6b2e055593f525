package cms

//lint:file-ignore SA1019 S/MIME key transport is RSA PKCS #1 v1.5 for most senders (RFC 8551 section 2.3); decryption is constant-time with implicit rejection (crypto/cms keytrans.go)

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Encryption: EnvelopedData (RFC 5652 section 6) with AES-256-CBC (RFC 3565) or AuthEnvelopedData (RFC 5083)
// with AES-256-GCM (RFC 5084), to any number of certificates:
//
//   - RSA: key transport with PKCS #1 v1.5 (RFC 3370 section 4.2.1), what every S/MIME client reads; with
//     RSAES-OAEP (RFC 4055 section 4.1, RFC 8551 section 2.3) when the certificate's key is an
//     id-RSAES-OAEP key, with the hash its parameters name (SHA-256 when they name none).
//   - EC P-256/384/521: ephemeral-static ECDH (RFC 5753 section 3.1.1) with dhSinglePass-stdDH and the X9.63
//     KDF over SHA-256/384/512 (by curve, RFC 5753 section 8 / RFC 8551 section 2.3), the KEK wrapping the
//     content key with AES-256 key wrap (RFC 3394, RFC 3565 section 2.3.2); one ephemeral key per recipient.
//
// Every recipient is named by issuer and serial number (RFC 5652 section 6.2.1), which every reader supports.

// EncryptOptions tune Encrypt. A nil *EncryptOptions means the zero value.
type EncryptOptions struct {
	// Authenticated selects AuthEnvelopedData with AES-256-GCM (12-byte nonce, 16-byte tag) instead of
	// EnvelopedData with AES-256-CBC. Use it only when every recipient announced id-aes256-GCM in its
	// SMIMECapabilities (RFC 8551 section 2.7.1): older clients cannot read it.
	Authenticated bool
}

// ErrRecipientKey: a recipient certificate's key cannot be encrypted to (DSA, Ed25519, an unknown curve).
var ErrRecipientKey = errors.New("cms: unsupported recipient key")

// dhSinglePass-stdDH-sha*kdf-scheme (RFC 5753 section 7.1.4), by curve.
var (
	oidStdDHSHA256 = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 1}
	oidStdDHSHA384 = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 2}
	oidStdDHSHA512 = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 3}
)

// Encrypt returns the DER ContentInfo of an EnvelopedData (or, with opts.Authenticated, AuthEnvelopedData)
// holding content for each of recipients. It fails with ErrRecipientKey naming the certificate whose key it
// cannot use; recipients must not be empty.
func Encrypt(content []byte, recipients []*x509.Certificate, opts *EncryptOptions) ([]byte, error) {
	var o EncryptOptions
	if opts != nil {
		o = *opts
	}
	if len(recipients) == 0 {
		return nil, errors.New("cms: encrypt: no recipient")
	}
	cek := make([]byte, 32)
	if _, err := rand.Read(cek); err != nil {
		return nil, fmt.Errorf("cms: encrypt: %w", err)
	}
	defer clear(cek)
	ris := make([][]byte, 0, len(recipients))
	allV0 := true
	for _, c := range recipients {
		ri, v0, err := recipientInfoFor(c, cek)
		if err != nil {
			return nil, err
		}
		allV0 = allV0 && v0
		ris = append(ris, ri)
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, fmt.Errorf("cms: encrypt: %w", err)
	}
	var b cryptobyte.Builder
	addRecipientInfos := func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
			// A SET OF in DER is sorted (X.690 section 11.6); readers do not care, but keep it DER.
			sorted := append([][]byte(nil), ris...)
			sortDER(sorted)
			for _, ri := range sorted {
				b.AddBytes(ri)
			}
		})
	}
	if o.Authenticated {
		nonce := make([]byte, 12)
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("cms: encrypt: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("cms: encrypt: %w", err)
		}
		sealed := aead.Seal(nil, nonce, content, nil) // no authAttrs: the AAD is empty (RFC 5083 section 2.2)
		ct, tag := sealed[:len(content)], sealed[len(content):]
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(OIDAuthEnvelopedData)
			b.AddASN1(tagCtx0C, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(0) // RFC 5083 section 2.1: version 0
					addRecipientInfos(b)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncryptedContentInfo
						b.AddASN1ObjectIdentifier(OIDData)
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(oidAES256GCM)
							b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // GCMParameters, RFC 5084 section 3.2
								b.AddASN1OctetString(nonce)
								b.AddASN1Int64(16)
							})
						})
						b.AddASN1(tagCtx0, func(b *cryptobyte.Builder) { b.AddBytes(ct) })
					})
					b.AddASN1OctetString(tag) // mac
				})
			})
		})
		return b.Bytes()
	}
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("cms: encrypt: %w", err)
	}
	// PKCS #7 padding (RFC 5652 section 6.3).
	pad := aes.BlockSize - len(content)%aes.BlockSize
	padded := make([]byte, len(content)+pad)
	copy(padded, content)
	for i := len(content); i < len(padded); i++ {
		padded[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(padded, padded)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(OIDEnvelopedData)
		b.AddASN1(tagCtx0C, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				// RFC 5652 section 6.1: version 0 when every RecipientInfo is version 0 (KeyTrans by issuer and
				// serial), else 2 (a KeyAgreeRecipientInfo is version 3).
				if allV0 {
					b.AddASN1Int64(0)
				} else {
					b.AddASN1Int64(2)
				}
				addRecipientInfos(b)
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(OIDData)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidAES256CBC)
						b.AddASN1OctetString(iv)
					})
					b.AddASN1(tagCtx0, func(b *cryptobyte.Builder) { b.AddBytes(padded) })
				})
			})
		})
	})
	return b.Bytes()
}

// recipientInfoFor returns the DER RecipientInfo carrying cek for cert, and whether it is version 0.
func recipientInfoFor(cert *x509.Certificate, cek []byte) ([]byte, bool, error) {
	fail := func(format string, args ...any) ([]byte, bool, error) {
		return nil, false, fmt.Errorf("%w: certificate %q: %s", ErrRecipientKey, cert.Subject.String(), fmt.Sprintf(format, args...))
	}
	spkiAlg, spkiParams, spkiKey, err := parseSPKI(cert.RawSubjectPublicKeyInfo)
	if err != nil {
		return fail("%v", err)
	}
	switch {
	case spkiAlg.Equal(oidRSAEncryption):
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return fail("bad rsa key")
		}
		wrapped, err := rsa.EncryptPKCS1v15(rand.Reader, pub, cek)
		if err != nil {
			return fail("%v", err)
		}
		return keyTransRI(cert, func(b *cryptobyte.Builder) { addAlgorithm(b, oidRSAEncryption, true) }, wrapped), true, nil
	case spkiAlg.Equal(oidRSAESOAEP):
		// RFC 4055 section 4.1: a key restricted to OAEP; its parameters, when present, fix the hashes.
		pub, err := x509.ParsePKCS1PublicKey(spkiKey)
		if err != nil {
			return fail("bad rsa-oaep key: %v", err)
		}
		var params []byte
		var oo rsa.OAEPOptions
		if nullOrAbsent(spkiParams) {
			oo = rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA256}
			params = oaepSHA256Params()
		} else {
			if oo, _, err = oaepParams(spkiParams); err != nil {
				return fail("%v", err)
			}
			params = spkiParams
		}
		wrapped, err := rsa.EncryptOAEPWithOptions(rand.Reader, pub, cek, &oo)
		if err != nil {
			return fail("%v", err)
		}
		return keyTransRI(cert, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidRSAESOAEP)
				b.AddBytes(params)
			})
		}, wrapped), true, nil
	case spkiAlg.Equal(oidECPublicKey):
		pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
		if !ok {
			return fail("bad ec key")
		}
		peer, err := pub.ECDH()
		if err != nil {
			return fail("%v", err)
		}
		ri, err := keyAgreeRI(cert, peer, cek)
		if err != nil {
			return fail("%v", err)
		}
		return ri, false, nil
	}
	return fail("key algorithm %v", spkiAlg)
}

// parseSPKI splits a SubjectPublicKeyInfo (RFC 5280 section 4.1.2.7) into its algorithm OID, the full TLV of
// the algorithm parameters (nil when absent) and the subjectPublicKey bits.
func parseSPKI(raw []byte) (asn1.ObjectIdentifier, []byte, []byte, error) {
	s := cryptobyte.String(raw)
	var spki cryptobyte.String
	var bits asn1.BitString
	if !s.ReadASN1(&spki, cbasn1.SEQUENCE) {
		return nil, nil, nil, errors.New("bad subject public key info")
	}
	alg, ok := readAlgorithm(&spki)
	if !ok || !spki.ReadASN1BitString(&bits) || bits.BitLength%8 != 0 {
		return nil, nil, nil, errors.New("bad subject public key info")
	}
	return alg.oid, alg.params, bits.Bytes, nil
}

// oaepSHA256Params returns the DER RSAES-OAEP-params with SHA-256, MGF1-SHA-256 and the empty label (RFC 4055
// section 4.1; sha256 identifiers without parameters, section 2.1).
func oaepSHA256Params() []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(tagCtx0C, func(b *cryptobyte.Builder) { addAlgorithm(b, oidSHA256, false) })
		b.AddASN1(tagCtx1C, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidMGF1)
				addAlgorithm(b, oidSHA256, false)
			})
		})
	})
	return b.BytesOrPanic()
}

// keyTransRI builds a version-0 KeyTransRecipientInfo (RFC 5652 section 6.2.1).
func keyTransRI(cert *x509.Certificate, alg func(*cryptobyte.Builder), wrapped []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(0)
		addIssuerAndSerial(b, cert)
		alg(b)
		b.AddASN1OctetString(wrapped)
	})
	return b.BytesOrPanic()
}

// keyAgreeRI builds a KeyAgreeRecipientInfo (RFC 5652 section 6.2.2, RFC 5753 section 3.1.1): a fresh
// ephemeral key on peer's curve as originatorKey, no ukm, the X9.63 KDF over ECC-CMS-SharedInfo (section 7.2)
// and AES-256 key wrap of cek.
func keyAgreeRI(cert *x509.Certificate, peer *ecdh.PublicKey, cek []byte) ([]byte, error) {
	var scheme asn1.ObjectIdentifier
	var h crypto.Hash
	switch peer.Curve() {
	case ecdh.P256():
		scheme, h = oidStdDHSHA256, crypto.SHA256
	case ecdh.P384():
		scheme, h = oidStdDHSHA384, crypto.SHA384
	case ecdh.P521():
		scheme, h = oidStdDHSHA512, crypto.SHA512
	default:
		return nil, errors.New("unsupported curve")
	}
	eph, err := peer.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	z, err := eph.ECDH(peer)
	if err != nil {
		return nil, err
	}
	var wb cryptobyte.Builder
	addAlgorithm(&wb, oidAES256Wrap, false) // RFC 3565 section 2.3.2: parameters absent
	wrapAlg := wb.BytesOrPanic()
	kek := x963KDF(h.New, z, sharedInfo(wrapAlg, nil, 32), 32)
	wrapped, err := wrapAES(kek, cek)
	clear(kek)
	clear(z)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(tagCtx1C, func(b *cryptobyte.Builder) { // [1] KeyAgreeRecipientInfo
		b.AddASN1Int64(3)
		b.AddASN1(tagCtx0C, func(b *cryptobyte.Builder) { // originator [0] EXPLICIT
			b.AddASN1(tagCtx1C, func(b *cryptobyte.Builder) { // originatorKey [1] OriginatorPublicKey
				addAlgorithm(b, oidECPublicKey, false) // RFC 5753 section 3.1.1: parameters absent
				b.AddASN1BitString(eph.PublicKey().Bytes())
			})
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // keyEncryptionAlgorithm
			b.AddASN1ObjectIdentifier(scheme)
			b.AddBytes(wrapAlg)
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // RecipientEncryptedKeys
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addIssuerAndSerial(b, cert)
				b.AddASN1OctetString(wrapped)
			})
		})
	})
	return b.Bytes()
}

// wrapAES is the AES key wrap of RFC 3394 section 2.2.1 with the default IV A6A6A6A6A6A6A6A6.
func wrapAES(kek, key []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(key)%8 != 0 || len(key) < 16 {
		return nil, errors.New("key wrap: key length not a multiple of 8")
	}
	n := len(key) / 8
	out := make([]byte, 8+len(key))
	a := out[:8]
	for i := range a {
		a[i] = 0xa6
	}
	copy(out[8:], key)
	var buf [16]byte
	for j := 0; j <= 5; j++ {
		for i := 1; i <= n; i++ {
			copy(buf[:8], a)
			copy(buf[8:], out[8*i:8*i+8])
			block.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(buf[:8])^t)
			copy(out[8*i:8*i+8], buf[8:])
		}
	}
	return out, nil
}
