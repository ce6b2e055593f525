package cms

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hkdf"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"hash"

	"github.com/cloudflare/circl/dh/x448"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Key agreement, originator key and key wrap algorithms (RFC 5753 section 7.1.4, RFC 8418 section 5,
// RFC 3565 section 2.3.2, RFC 3217 section 4 / RFC 3370 section 4.3.1).
var (
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidX25519      = asn1.ObjectIdentifier{1, 3, 101, 110}
	oidX448        = asn1.ObjectIdentifier{1, 3, 101, 111}

	oidAES128Wrap = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 5}
	oidAES192Wrap = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 25}
	oidAES256Wrap = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 45}
	oid3DESWrap   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 6}
)

type kdfKind int

const (
	kdfX963 kdfKind = iota + 1
	kdfHKDF
)

type kaScheme struct {
	oid      asn1.ObjectIdentifier
	kdf      kdfKind
	hash     crypto.Hash
	name     string
	cofactor bool
}

var kaSchemes = []kaScheme{
	{asn1.ObjectIdentifier{1, 3, 133, 16, 840, 63, 0, 2}, kdfX963, crypto.SHA1, "sha1kdf", false},
	{asn1.ObjectIdentifier{1, 3, 132, 1, 11, 0}, kdfX963, crypto.SHA224, "sha224kdf", false},
	{asn1.ObjectIdentifier{1, 3, 132, 1, 11, 1}, kdfX963, crypto.SHA256, "sha256kdf", false},
	{asn1.ObjectIdentifier{1, 3, 132, 1, 11, 2}, kdfX963, crypto.SHA384, "sha384kdf", false},
	{asn1.ObjectIdentifier{1, 3, 132, 1, 11, 3}, kdfX963, crypto.SHA512, "sha512kdf", false},
	// cofactorDH is the same computation on the prime-order NIST curves (cofactor 1).
	{asn1.ObjectIdentifier{1, 3, 133, 16, 840, 63, 0, 3}, kdfX963, crypto.SHA1, "sha1kdf", true},
	{asn1.ObjectIdentifier{1, 3, 132, 1, 14, 0}, kdfX963, crypto.SHA224, "sha224kdf", true},
	{asn1.ObjectIdentifier{1, 3, 132, 1, 14, 1}, kdfX963, crypto.SHA256, "sha256kdf", true},
	{asn1.ObjectIdentifier{1, 3, 132, 1, 14, 2}, kdfX963, crypto.SHA384, "sha384kdf", true},
	{asn1.ObjectIdentifier{1, 3, 132, 1, 14, 3}, kdfX963, crypto.SHA512, "sha512kdf", true},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 19}, kdfHKDF, crypto.SHA256, "hkdf-sha256", false},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 20}, kdfHKDF, crypto.SHA384, "hkdf-sha384", false},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 3, 21}, kdfHKDF, crypto.SHA512, "hkdf-sha512", false},
}

type wrapAlgo struct {
	oid    asn1.ObjectIdentifier
	name   string
	kekLen int
}

var wrapAlgos = []wrapAlgo{
	{oidAES128Wrap, "aes128-wrap", 16},
	{oidAES192Wrap, "aes192-wrap", 24},
	{oidAES256Wrap, "aes256-wrap", 32},
	{oid3DESWrap, "3des-wrap", 24},
}

// keyAgreement recovers the content-encryption key from one RecipientEncryptedKey of a KeyAgreeRecipientInfo
// with ephemeral-static (EC)DH: RFC 5753 section 3.1 (NIST curves, X9.63 KDF) and RFC 8418 section 2 (X25519,
// X448, HKDF or X9.63 KDF), then unwraps it with the KEK (RFC 3394 AES key wrap, RFC 3217 3DES key wrap).
func keyAgreement(ri *recipientInfo, key crypto.PrivateKey) ([]byte, string, error) {
	ka, ok := keyAgreerOf(key)
	if !ok {
		return nil, "", fmt.Errorf("%w: %v: %T for key agreement", ErrUnsupported, errKeyType, key)
	}
	curve := curveName(ka.Public())
	var wantOrig asn1.ObjectIdentifier
	switch curve {
	case "p256", "p384", "p521":
		wantOrig = oidECPublicKey
	case "x25519":
		wantOrig = oidX25519
	case "x448":
		wantOrig = oidX448
	default:
		return nil, "", fmt.Errorf("%w: %v: key agreement public key %T", ErrUnsupported, errKeyType, ka.Public())
	}
	if !ri.originatorAlg.oid.Equal(wantOrig) {
		return nil, "", fmt.Errorf("%w: %v: originator key %v for a %s key", ErrUnsupported, errKeyType, ri.originatorAlg.oid, curve)
	}
	var scheme *kaScheme
	for i := range kaSchemes {
		if kaSchemes[i].oid.Equal(ri.keyAlg.oid) {
			scheme = &kaSchemes[i]
		}
	}
	if scheme == nil {
		return nil, "", fmt.Errorf("%w: key agreement algorithm %v", ErrUnsupported, ri.keyAlg.oid)
	}
	// keyEncryptionAlgorithm parameters: the KeyWrapAlgorithm (RFC 5753 section 7.1.4).
	p := cryptobyte.String(ri.keyAlg.params)
	walg, ok := readAlgorithm(&p)
	if !ok || !p.Empty() {
		return nil, "", malformed("bad key wrap algorithm")
	}
	var wrap *wrapAlgo
	for i := range wrapAlgos {
		if wrapAlgos[i].oid.Equal(walg.oid) {
			wrap = &wrapAlgos[i]
		}
	}
	if wrap == nil {
		return nil, "", fmt.Errorf("%w: key wrap algorithm %v", ErrUnsupported, walg.oid)
	}
	name := "ecdh-" + curve
	if curve == "x25519" || curve == "x448" {
		name = curve
	}
	if scheme.cofactor {
		name += "-cofactor"
	}
	name += "-" + scheme.name + "-" + wrap.name

	// RFC 5753 section 7.1.1 / RFC 5480 section 2.2: EC points are sent uncompressed here; compressed
	// points are allowed by X9.62 but not implemented by crypto/ecdh.
	if wantOrig.Equal(oidECPublicKey) && (len(ri.originatorKey) == 0 || ri.originatorKey[0] != 4) {
		return nil, name, fmt.Errorf("%w: compressed or malformed originator ec point", ErrUnsupported)
	}
	z, err := ka.SharedSecret(ri.originatorKey)
	if err != nil {
		switch ka.(type) {
		case ecdhAgreer, *x448Agreer:
			// A bad originator point (public data) from the built-in agreers.
			return nil, name, ErrDecryption
		}
		return nil, name, keyError(err)
	}
	info := sharedInfo(walg.raw, ri.ukm, wrap.kekLen)
	var kek []byte
	switch scheme.kdf {
	case kdfX963:
		kek = x963KDF(scheme.hash.New, z, info, wrap.kekLen)
	case kdfHKDF:
		// RFC 8418 section 2.2: HKDF with no salt, the shared secret as IKM and the DER SharedInfo as info.
		kek, err = hkdf.Key(scheme.hash.New, z, nil, string(info), wrap.kekLen)
		if err != nil {
			return nil, name, ErrDecryption
		}
	}
	var cek []byte
	if wrap.oid.Equal(oid3DESWrap) {
		cek, err = unwrap3DES(kek, ri.encryptedKey)
	} else {
		cek, err = unwrapAES(kek, ri.encryptedKey)
	}
	if err != nil {
		return nil, name, ErrDecryption
	}
	return cek, name, nil
}

// sharedInfo builds the DER ECC-CMS-SharedInfo (RFC 5753 section 7.2): keyInfo is the key wrap
// AlgorithmIdentifier as sent, entityUInfo the ukm, suppPubInfo the KEK length in bits as 32-bit big endian.
func sharedInfo(wrapAlg, ukm []byte, kekLen int) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(wrapAlg)
		if ukm != nil {
			b.AddASN1(tagCtx0C, func(b *cryptobyte.Builder) { b.AddASN1OctetString(ukm) })
		}
		b.AddASN1(tagCtx2C, func(b *cryptobyte.Builder) {
			b.AddASN1OctetString(binary.BigEndian.AppendUint32(nil, uint32(kekLen*8)))
		})
	})
	return b.BytesOrPanic()
}

// x963KDF is the ANSI X9.63 key derivation function (SEC 1 v2 section 3.6.1, used by RFC 5753 section 3.1.1):
// Hash(Z || counter || SharedInfo) for counter = 1, 2, ... truncated to n bytes.
func x963KDF(h func() hash.Hash, z, info []byte, n int) []byte {
	out := make([]byte, 0, n+64)
	var ctr [4]byte
	for i := uint32(1); len(out) < n; i++ {
		binary.BigEndian.PutUint32(ctr[:], i)
		d := h()
		d.Write(z)
		d.Write(ctr[:])
		d.Write(info)
		out = d.Sum(out)
	}
	return out[:n]
}

// unwrapAES is the AES key unwrap of RFC 3394 section 2.2.2 with the default IV A6A6A6A6A6A6A6A6
// (section 2.2.3.1).
func unwrapAES(kek, wrapped []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped)%8 != 0 || len(wrapped) < 24 || len(wrapped) > 1024 {
		return nil, ErrDecryption
	}
	n := len(wrapped)/8 - 1
	r := make([]byte, 8*n)
	copy(r, wrapped[8:])
	var a [8]byte
	copy(a[:], wrapped[:8])
	var buf [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(a[:])^t)
			copy(buf[8:], r[8*(i-1):8*i])
			block.Decrypt(buf[:], buf[:])
			copy(a[:], buf[:8])
			copy(r[8*(i-1):8*i], buf[8:])
		}
	}
	iv := [8]byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}
	if subtle.ConstantTimeCompare(a[:], iv[:]) != 1 {
		return nil, ErrDecryption
	}
	return r, nil
}

// unwrap3DES is the Triple-DES key unwrap of RFC 3217 section 3.2 (also RFC 3370 section 4.3.1): two CBC
// passes around a byte reversal, then the SHA-1 based checksum (section 2).
func unwrap3DES(kek, wrapped []byte) ([]byte, error) {
	block, err := des.NewTripleDESCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped)%8 != 0 || len(wrapped) < 24 || len(wrapped) > 1024 {
		return nil, ErrDecryption
	}
	iv2 := []byte{0x4a, 0xdd, 0xa2, 0x2c, 0x79, 0xe8, 0x21, 0x05}
	temp2 := make([]byte, len(wrapped))
	cipher.NewCBCDecrypter(block, iv2).CryptBlocks(temp2, wrapped)
	for i, j := 0, len(temp2)-1; i < j; i, j = i+1, j-1 {
		temp2[i], temp2[j] = temp2[j], temp2[i]
	}
	iv, temp1 := temp2[:8], temp2[8:]
	cekICV := make([]byte, len(temp1))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(cekICV, temp1)
	cek, icv := cekICV[:len(cekICV)-8], cekICV[len(cekICV)-8:]
	sum := sha1.Sum(cek)
	if subtle.ConstantTimeCompare(sum[:8], icv) != 1 {
		return nil, ErrDecryption
	}
	return cek, nil
}

// NewX448KeyAgreer returns a KeyAgreer for a raw 56-byte X448 private key (RFC 7748 section 5).
func NewX448KeyAgreer(priv []byte) (KeyAgreer, error) {
	if len(priv) != x448.Size {
		return nil, fmt.Errorf("%w: x448 private key of %d bytes", ErrMalformed, len(priv))
	}
	a := &x448Agreer{}
	copy(a.priv[:], priv)
	x448.KeyGen(&a.pub, &a.priv)
	return a, nil
}

type x448Agreer struct{ priv, pub x448.Key }

func (a *x448Agreer) Public() crypto.PublicKey {
	return X448PublicKey(append([]byte(nil), a.pub[:]...))
}

// SharedSecret computes X448(priv, peer) (RFC 7748 section 6.2); a low-order peer key is an error.
func (a *x448Agreer) SharedSecret(peer []byte) ([]byte, error) {
	if len(peer) != x448.Size {
		return nil, fmt.Errorf("%w: x448 public key of %d bytes", ErrMalformed, len(peer))
	}
	var pk, shared x448.Key
	copy(pk[:], peer)
	if !x448.Shared(&shared, &a.priv, &pk) {
		return nil, fmt.Errorf("%w: x448 low-order public key", ErrDecryption)
	}
	return shared[:], nil
}
