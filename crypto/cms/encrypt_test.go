package cms

//lint:file-ignore SA1019 tests build RSA PKCS #1 v1.5 key transport, what most S/MIME senders use (RFC 8551 section 2.3)

// A test-only CMS encryptor: builds EnvelopedData / AuthEnvelopedData for the variants OpenSSL 3.0 cannot
// produce (X25519, X448, ChaCha20-Poly1305) and for large benchmark messages, in DER or streamed BER.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"testing"

	"github.com/cloudflare/circl/dh/x448"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

type encRecipient struct {
	cert *x509.Certificate
	ski  bool                  // identify by subjectKeyIdentifier instead of issuer and serial
	oaep *rsa.OAEPOptions      // RSA: nil means PKCS #1 v1.5
	kdf  asn1.ObjectIdentifier // key agreement scheme (default: per curve)
	wrap asn1.ObjectIdentifier // key wrap (default aes256-wrap)
	ukm  []byte
}

type encOptions struct {
	content   asn1.ObjectIdentifier // default aes-256-cbc
	ber       bool                  // indefinite lengths and a constructed encryptedContent
	chunk     int                   // BER segment size (default 4096)
	authAttrs bool                  // AuthEnvelopedData: include an authenticated content-type attribute
	extraRIs  [][]byte              // RecipientInfos added before the real ones
}

// der encodes one TLV with a definite length.
func der(tag cbasn1.Tag, parts ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, p := range parts {
			b.AddBytes(p)
		}
	})
	return b.BytesOrPanic()
}

// indef encodes one constructed TLV with the indefinite length form (X.690 section 8.1.3.6).
func indef(tag byte, parts ...[]byte) []byte {
	out := []byte{tag | 0x20, 0x80}
	for _, p := range parts {
		out = append(out, p...)
	}
	return append(out, 0, 0)
}

func derOID(oid asn1.ObjectIdentifier) []byte {
	b, err := asn1.Marshal(oid)
	if err != nil {
		panic(err)
	}
	return b
}

func derInt(v int64) []byte {
	var b cryptobyte.Builder
	b.AddASN1Int64(v)
	return b.BytesOrPanic()
}

func derOctets(p []byte) []byte { return der(cbasn1.OCTET_STRING, p) }

func algID(oid asn1.ObjectIdentifier, params ...[]byte) []byte {
	return der(cbasn1.SEQUENCE, append([][]byte{derOID(oid)}, params...)...)
}

func issuerAndSerial(c *x509.Certificate) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(c.RawIssuer)
		b.AddASN1BigInt(c.SerialNumber)
	})
	return b.BytesOrPanic()
}

var hashOIDs = map[string]asn1.ObjectIdentifier{"SHA-1": oidSHA1, "SHA-224": oidSHA224, "SHA-256": oidSHA256,
	"SHA-384": oidSHA384, "SHA-512": oidSHA512}

// wrapAESTest is the RFC 3394 section 2.2.1 key wrap, written independently of unwrapAES.
func wrapAESTest(kek, p []byte) []byte {
	block, err := aes.NewCipher(kek)
	if err != nil {
		panic(err)
	}
	n := len(p) / 8
	a := uint64(0xa6a6a6a6a6a6a6a6)
	r := append([]byte(nil), p...)
	var buf [16]byte
	for j := 0; j <= 5; j++ {
		for i := 1; i <= n; i++ {
			binary.BigEndian.PutUint64(buf[:8], a)
			copy(buf[8:], r[8*(i-1):8*i])
			block.Encrypt(buf[:], buf[:])
			a = binary.BigEndian.Uint64(buf[:8]) ^ uint64(n*j+i)
			copy(r[8*(i-1):8*i], buf[8:])
		}
	}
	return append(binary.BigEndian.AppendUint64(nil, a), r...)
}

func contentKeyLen(oid asn1.ObjectIdentifier) int {
	for _, c := range contentAlgos {
		if c.oid.Equal(oid) {
			return c.keyLen
		}
	}
	panic("unknown content algorithm")
}

// rawPublicOf extracts the raw key and algorithm from a certificate's SubjectPublicKeyInfo.
func rawPublicOf(t testing.TB, c *x509.Certificate) (asn1.ObjectIdentifier, []byte) {
	var spki struct {
		Algo struct{ Algorithm asn1.ObjectIdentifier }
		Key  asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil {
		t.Fatalf("bad subject public key info: %v", err)
	}
	return spki.Algo.Algorithm, spki.Key.Bytes
}

func (r encRecipient) rid(kari bool) []byte {
	if !r.ski {
		return issuerAndSerial(r.cert)
	}
	if kari {
		return der(cbasn1.Tag(0).Constructed().ContextSpecific(), derOctets(r.cert.SubjectKeyId))
	}
	return der(cbasn1.Tag(0).ContextSpecific(), r.cert.SubjectKeyId)
}

func (r encRecipient) recipientInfo(t testing.TB, cek []byte) []byte {
	if pub, ok := r.cert.PublicKey.(*rsa.PublicKey); ok {
		version := int64(0)
		if r.ski {
			version = 2
		}
		if r.oaep == nil {
			ek, err := rsa.EncryptPKCS1v15(rand.Reader, pub, cek)
			if err != nil {
				t.Fatal(err)
			}
			return der(cbasn1.SEQUENCE, derInt(version), r.rid(false), algID(oidRSAEncryption, []byte{5, 0}), derOctets(ek))
		}
		ek, err := rsa.EncryptOAEPWithOptions(rand.Reader, pub, cek, r.oaep)
		if err != nil {
			t.Fatal(err)
		}
		mgf := r.oaep.MGFHash
		if mgf == 0 {
			mgf = r.oaep.Hash
		}
		params := der(cbasn1.SEQUENCE,
			der(tagCtx0C, algID(hashOIDs[r.oaep.Hash.String()])),
			der(tagCtx1C, algID(oidMGF1, algID(hashOIDs[mgf.String()]))),
			der(tagCtx2C, algID(oidPSpecified, derOctets(r.oaep.Label))))
		return der(cbasn1.SEQUENCE, derInt(version), r.rid(false), algID(oidRSAESOAEP, params), derOctets(ek))
	}
	// Key agreement: ephemeral-static (RFC 5753 section 3.1.1, RFC 8418 section 2).
	var z, ephPub []byte
	var origAlg []byte
	kdf := r.kdf
	pubKey := r.cert.PublicKey
	if alg, raw := rawPublicOf(t, r.cert); alg.Equal(oidX25519) {
		var err error
		if pubKey, err = ecdh.X25519().NewPublicKey(raw); err != nil {
			t.Fatal(err)
		}
	}
	switch pub := pubKey.(type) {
	case *ecdh.PublicKey: // X25519
		eph, err := pub.Curve().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		z, _ = eph.ECDH(pub)
		ephPub = eph.PublicKey().Bytes()
		origAlg = algID(oidX25519)
		if kdf == nil {
			kdf = kaSchemes[10].oid // hkdf-sha256
		}
	case interface {
		ECDH() (*ecdh.PublicKey, error)
	}: // *ecdsa.PublicKey
		p, err := pub.ECDH()
		if err != nil {
			t.Fatal(err)
		}
		eph, err := p.Curve().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		z, _ = eph.ECDH(p)
		ephPub = eph.PublicKey().Bytes()
		origAlg = algID(oidECPublicKey)
		if kdf == nil {
			kdf = kaSchemes[2].oid // sha256kdf
		}
	default: // X448
		var peer, sk, pk, shared x448.Key
		alg, raw := rawPublicOf(t, r.cert)
		if !alg.Equal(oidX448) {
			t.Fatalf("unsupported recipient key %v", alg)
		}
		copy(peer[:], raw)
		rand.Read(sk[:])
		x448.KeyGen(&pk, &sk)
		if !x448.Shared(&shared, &sk, &peer) {
			t.Fatal("x448 shared")
		}
		z, ephPub = shared[:], pk[:]
		origAlg = algID(oidX448)
		if kdf == nil {
			kdf = kaSchemes[12].oid // hkdf-sha512
		}
	}
	wrap := r.wrap
	if wrap == nil {
		wrap = oidAES256Wrap
	}
	var wa *wrapAlgo
	for i := range wrapAlgos {
		if wrapAlgos[i].oid.Equal(wrap) {
			wa = &wrapAlgos[i]
		}
	}
	var scheme *kaScheme
	for i := range kaSchemes {
		if kaSchemes[i].oid.Equal(kdf) {
			scheme = &kaSchemes[i]
		}
	}
	wrapAlg := algID(wrap)
	info := sharedInfo(wrapAlg, r.ukm, wa.kekLen)
	var kek []byte
	if scheme.kdf == kdfHKDF {
		kek, _ = hkdf.Key(scheme.hash.New, z, nil, string(info), wa.kekLen)
	} else {
		kek = x963KDF(scheme.hash.New, z, info, wa.kekLen)
	}
	ek := wrapAESTest(kek, cek)
	bits, _ := asn1.Marshal(asn1.BitString{Bytes: ephPub, BitLength: 8 * len(ephPub)})
	orig := der(tagCtx0C, der(tagCtx1C, origAlg, bits))
	parts := [][]byte{derInt(3), orig}
	if r.ukm != nil {
		parts = append(parts, der(tagCtx1C, derOctets(r.ukm)))
	}
	parts = append(parts, algID(kdf, wrapAlg), der(cbasn1.SEQUENCE, der(cbasn1.SEQUENCE, r.rid(true), derOctets(ek))))
	return der(tagCtx1C, parts...)
}

// testEncrypt encrypts plaintext for the recipients and returns the ContentInfo.
func testEncrypt(t testing.TB, plaintext []byte, o encOptions, rs ...encRecipient) []byte {
	t.Helper()
	if o.content == nil {
		o.content = oidAES256CBC
	}
	if o.chunk == 0 {
		o.chunk = 4096
	}
	cek := make([]byte, contentKeyLen(o.content))
	rand.Read(cek)
	ris := append([][]byte(nil), o.extraRIs...)
	for _, r := range rs {
		ris = append(ris, r.recipientInfo(t, cek))
	}
	risDER := der(cbasn1.SET, ris...)

	var ct, mac, params, authAttrs []byte
	auth := false
	switch {
	case o.content.Equal(oidAES128GCM) || o.content.Equal(oidAES192GCM) || o.content.Equal(oidAES256GCM) ||
		o.content.Equal(oidChaCha20):
		auth = true
		nonce := make([]byte, 12)
		rand.Read(nonce)
		var aead cipher.AEAD
		if o.content.Equal(oidChaCha20) {
			aead, _ = chacha20poly1305.New(cek)
			params = derOctets(nonce)
		} else {
			block, _ := aes.NewCipher(cek)
			aead, _ = cipher.NewGCM(block)
			params = der(cbasn1.SEQUENCE, derOctets(nonce), derInt(16))
		}
		var aad []byte
		if o.authAttrs {
			// One attribute: contentType = id-data (RFC 5652 section 11.1).
			attr := der(cbasn1.SEQUENCE, derOID(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}),
				der(cbasn1.SET, derOID(OIDData)))
			authAttrs = der(tagCtx1C, attr)
			aad = der(cbasn1.SET, attr)
		}
		sealed := aead.Seal(nil, nonce, plaintext, aad)
		ct, mac = sealed[:len(plaintext)], sealed[len(plaintext):]
	default:
		var block cipher.Block
		if o.content.Equal(oidDESEDE3CBC) {
			block, _ = des.NewTripleDESCipher(cek)
		} else {
			block, _ = aes.NewCipher(cek)
		}
		iv := make([]byte, block.BlockSize())
		rand.Read(iv)
		params = derOctets(iv)
		pad := block.BlockSize() - len(plaintext)%block.BlockSize()
		ct = make([]byte, len(plaintext)+pad)
		copy(ct, plaintext)
		for i := len(plaintext); i < len(ct); i++ {
			ct[i] = byte(pad)
		}
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)
	}
	typ := OIDEnvelopedData
	if auth {
		typ = OIDAuthEnvelopedData
	}
	algo := algID(o.content, params)
	var tail [][]byte
	if auth {
		if authAttrs != nil {
			tail = append(tail, authAttrs)
		}
		tail = append(tail, derOctets(mac))
	}
	if !o.ber {
		eci := der(cbasn1.SEQUENCE, derOID(OIDData), algo, der(tagCtx0, ct))
		body := der(cbasn1.SEQUENCE, append([][]byte{derInt(0), risDER, eci}, tail...)...)
		return der(cbasn1.SEQUENCE, derOID(typ), der(tagCtx0C, body))
	}
	var segs [][]byte
	for len(ct) > 0 {
		n := min(o.chunk, len(ct))
		segs = append(segs, derOctets(ct[:n]))
		ct = ct[n:]
	}
	eci := indef(0x30, derOID(OIDData), algo, indef(0x80, segs...))
	body := indef(0x30, append([][]byte{derInt(0), risDER, eci}, tail...)...)
	return indef(0x30, derOID(typ), indef(0xa0, body))
}
