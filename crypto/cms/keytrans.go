package cms

//lint:file-ignore SA1019 S/MIME key transport is RSA PKCS #1 v1.5 for most senders (RFC 8551 section 2.3); decryption is constant-time with implicit rejection (crypto/cms keytrans.go)

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Key transport and hash algorithms (RFC 3370 section 4.2.1, RFC 4055 sections 2.1 and 4.1, RFC 5754).
var (
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSAESOAEP     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidMGF1          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecified    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
	oidSHA1          = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA224        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 4}
	oidSHA256        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
)

func hashByOID(oid asn1.ObjectIdentifier) (crypto.Hash, string, bool) {
	switch {
	case oid.Equal(oidSHA1):
		return crypto.SHA1, "sha1", true
	case oid.Equal(oidSHA224):
		return crypto.SHA224, "sha224", true
	case oid.Equal(oidSHA256):
		return crypto.SHA256, "sha256", true
	case oid.Equal(oidSHA384):
		return crypto.SHA384, "sha384", true
	case oid.Equal(oidSHA512):
		return crypto.SHA512, "sha512", true
	}
	return 0, "", false
}

// nullOrAbsent reports whether AlgorithmIdentifier parameters are absent or NULL.
func nullOrAbsent(params []byte) bool {
	return len(params) == 0 || (len(params) == 2 && params[0] == 0x05 && params[1] == 0)
}

// oaepParams parses RSAES-OAEP-params (RFC 4055 section 4.1); the defaults are SHA-1, MGF1 with SHA-1 and an
// empty label.
func oaepParams(params []byte) (opts rsa.OAEPOptions, name string, err error) {
	opts = rsa.OAEPOptions{Hash: crypto.SHA1, MGFHash: crypto.SHA1}
	hashName, mgfName := "sha1", "sha1"
	if nullOrAbsent(params) {
		return opts, "rsa-oaep-sha1", nil
	}
	bad := malformed("bad rsaes-oaep parameters")
	s := cryptobyte.String(params)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return opts, "", bad
	}
	if seq.PeekASN1Tag(tagCtx0C) {
		var h cryptobyte.String
		if !seq.ReadASN1(&h, tagCtx0C) {
			return opts, "", bad
		}
		alg, ok := readAlgorithm(&h)
		if !ok || !h.Empty() {
			return opts, "", bad
		}
		if opts.Hash, hashName, ok = hashByOID(alg.oid); !ok {
			return opts, "", fmt.Errorf("%w: oaep hash %v", ErrUnsupported, alg.oid)
		}
	}
	if seq.PeekASN1Tag(tagCtx1C) {
		var m cryptobyte.String
		if !seq.ReadASN1(&m, tagCtx1C) {
			return opts, "", bad
		}
		alg, ok := readAlgorithm(&m)
		if !ok || !m.Empty() {
			return opts, "", bad
		}
		if !alg.oid.Equal(oidMGF1) {
			return opts, "", fmt.Errorf("%w: oaep mask generation %v", ErrUnsupported, alg.oid)
		}
		p := cryptobyte.String(alg.params)
		halg, ok := readAlgorithm(&p)
		if !ok || !p.Empty() {
			return opts, "", bad
		}
		if opts.MGFHash, mgfName, ok = hashByOID(halg.oid); !ok {
			return opts, "", fmt.Errorf("%w: mgf1 hash %v", ErrUnsupported, halg.oid)
		}
	}
	if seq.PeekASN1Tag(tagCtx2C) {
		var l cryptobyte.String
		if !seq.ReadASN1(&l, tagCtx2C) {
			return opts, "", bad
		}
		alg, ok := readAlgorithm(&l)
		if !ok || !l.Empty() {
			return opts, "", bad
		}
		if !alg.oid.Equal(oidPSpecified) {
			return opts, "", fmt.Errorf("%w: oaep label source %v", ErrUnsupported, alg.oid)
		}
		p := cryptobyte.String(alg.params)
		var label cryptobyte.String
		if !p.ReadASN1(&label, cbasn1.OCTET_STRING) || !p.Empty() {
			return opts, "", bad
		}
		if len(label) > 0 {
			opts.Label = []byte(label)
		}
	}
	if !seq.Empty() {
		return opts, "", bad
	}
	name = "rsa-oaep-" + hashName
	if mgfName != hashName {
		name += "-mgf1-" + mgfName
	}
	return opts, name, nil
}

// keyTransport recovers the content-encryption key from a KeyTransRecipientInfo (RFC 5652 section 6.2.1) with
// RSA PKCS #1 v1.5 (RFC 3370 section 4.2.1) or RSAES-OAEP (RFC 3560, RFC 4055 section 4). For v1.5 it uses
// rsa.PKCS1v15DecryptOptions.SessionKeyLen: bad padding yields a random key, so it surfaces only as the same
// ErrDecryption as a wrong MAC or CBC padding later (no Bleichenbacher oracle).
func keyTransport(ri *recipientInfo, key crypto.PrivateKey, cekLen int) ([]byte, string, error) {
	dec, ok := key.(crypto.Decrypter)
	if !ok {
		return nil, "", fmt.Errorf("%w: %v: %T for key transport", ErrUnsupported, errKeyType, key)
	}
	if _, ok := dec.Public().(*rsa.PublicKey); !ok {
		return nil, "", fmt.Errorf("%w: %v: %T public key for key transport", ErrUnsupported, errKeyType, dec.Public())
	}
	switch {
	case ri.keyAlg.oid.Equal(oidRSAEncryption):
		cek, err := dec.Decrypt(rand.Reader, ri.encryptedKey, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: cekLen})
		if err != nil {
			return nil, "rsa-pkcs1v15", keyError(err)
		}
		return cek, "rsa-pkcs1v15", nil
	case ri.keyAlg.oid.Equal(oidRSAESOAEP):
		opts, name, err := oaepParams(ri.keyAlg.params)
		if err != nil {
			return nil, "", err
		}
		cek, err := dec.Decrypt(rand.Reader, ri.encryptedKey, &opts)
		if err != nil {
			return nil, name, keyError(err)
		}
		return cek, name, nil
	}
	return nil, "", fmt.Errorf("%w: key transport algorithm %v", ErrUnsupported, ri.keyAlg.oid)
}

// keyError maps an error of a private key operation: rsa.ErrDecryption (and the length checks crypto/rsa makes
// on public data) become the vague ErrDecryption; anything else is the key's own failure (ErrKeyOperation).
func keyError(err error) error {
	if errors.Is(err, rsa.ErrDecryption) || errors.Is(err, ErrDecryption) {
		return ErrDecryption
	}
	return fmt.Errorf("%w: %w", ErrKeyOperation, err)
}
