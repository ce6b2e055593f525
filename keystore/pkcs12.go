package keystore

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"hash"
	"unicode/utf16"
)

// A PKCS#12 (RFC 7292) reader for what go-pkcs12 cannot read: files in BER throughout, also inside the
// encrypted safe contents, as NSS (Thunderbird, Firefox) writes them. It supports password integrity (HMAC
// with the RFC 7292 appendix B key derivation), PBES2 (RFC 8018 section 6.2: PBKDF2 with HMAC-SHA-1/2, AES-CBC
// or 3DES-CBC) and pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 appendix C), key bags, shrouded key bags and
// certificate bags.

const (
	maxPKCS12Size  = 1 << 20
	maxBERDepth    = 32
	maxPBKDFRounds = 10_000_000
)

var (
	oidData                = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidKeyBag              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 1}
	oidShroudedKeyBag      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidCertBag             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidX509Certificate     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
	oidPBES2               = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidPBEWithSHA3DES      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 3}
	oidHMACSHA1            = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA224          = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	oidHMACSHA256          = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384          = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512          = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidSHA1                = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256              = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384              = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512              = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidAES128CBC           = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC           = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC           = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC          = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	errPKCS12              = fmt.Errorf("%w: pkcs#12", ErrKeyFile)
	errPKCS12Unsupported   = fmt.Errorf("%w: pkcs#12 uses an unsupported algorithm", ErrKeyFile)
	errBER                 = fmt.Errorf("%w: bad BER encoding", ErrKeyFile)
	tagConstructedOctetStr = byte(0x24)
)

// berToDER rewrites one BER element (X.690 section 8) into DER form as far as encoding/asn1 needs: definite
// minimal lengths and primitive universal OCTET STRINGs. It returns the element and the bytes after it.
func berToDER(in []byte, depth int) (out, rest []byte, err error) {
	if depth > maxBERDepth {
		return nil, nil, errBER
	}
	if len(in) < 2 {
		return nil, nil, errBER
	}
	// Identifier octets (X.690 section 8.1.2), high tag numbers included.
	t := 1
	if in[0]&0x1f == 0x1f {
		for t < len(in) && in[t]&0x80 != 0 {
			t++
		}
		t++
		if t >= len(in) || t > 6 {
			return nil, nil, errBER
		}
	}
	tag := in[:t]
	constructed := in[0]&0x20 != 0
	// Length octets (section 8.1.3).
	l := int(in[t])
	p := t + 1
	indefinite := false
	switch {
	case l == 0x80:
		if !constructed {
			return nil, nil, errBER
		}
		indefinite = true
	case l > 0x80:
		n := l & 0x7f
		if n > 4 || p+n > len(in) {
			return nil, nil, errBER
		}
		l = 0
		for _, b := range in[p : p+n] {
			l = l<<8 | int(b)
		}
		p += n
	}
	if !indefinite && (l < 0 || l > len(in)-p) {
		return nil, nil, errBER
	}
	if !constructed {
		return appendTLV(nil, tag, in[p:p+l]), in[p+l:], nil
	}
	var content []byte
	var body []byte
	if indefinite {
		body = in[p:]
	} else {
		body = in[p : p+l]
	}
	for {
		if indefinite {
			if len(body) >= 2 && body[0] == 0 && body[1] == 0 {
				body = body[2:]
				break
			}
			if len(body) == 0 {
				return nil, nil, errBER
			}
		} else if len(body) == 0 {
			break
		}
		child, r, err := berToDER(body, depth+1)
		if err != nil {
			return nil, nil, err
		}
		body = r
		if len(tag) == 1 && tag[0] == tagConstructedOctetStr {
			// Segments of a constructed OCTET STRING (section 8.7.3) are OCTET STRINGs: keep their contents.
			var seg []byte
			if _, err := asn1.Unmarshal(child, &seg); err != nil {
				return nil, nil, errBER
			}
			content = append(content, seg...)
		} else {
			content = append(content, child...)
		}
	}
	if indefinite {
		rest = body
	} else {
		rest = in[p+l:]
	}
	if len(tag) == 1 && tag[0] == tagConstructedOctetStr {
		return appendTLV(nil, []byte{0x04}, content), rest, nil
	}
	return appendTLV(nil, tag, content), rest, nil
}

func appendTLV(dst, tag, content []byte) []byte {
	dst = append(dst, tag...)
	n := len(content)
	switch {
	case n < 0x80:
		dst = append(dst, byte(n))
	case n < 1<<8:
		dst = append(dst, 0x81, byte(n))
	case n < 1<<16:
		dst = append(dst, 0x82, byte(n>>8), byte(n))
	case n < 1<<24:
		dst = append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, content...)
}

func unmarshalBER(b []byte, v any) error {
	der, _, err := berToDER(b, 0)
	if err != nil {
		return err
	}
	if rest, err := asn1.Unmarshal(der, v); err != nil || len(rest) != 0 {
		return errPKCS12
	}
	return nil
}

type pfxPDU struct {
	Version  int
	AuthSafe contentInfo
	MacData  macData `asn1:"optional"`
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
}

type macData struct {
	Mac        digestInfo
	MacSalt    []byte
	Iterations int `asn1:"optional,default:1"`
}

type digestInfo struct {
	Algorithm pkix.AlgorithmIdentifier
	Digest    []byte
}

type encryptedData struct {
	Version              int
	EncryptedContentInfo struct {
		ContentType      asn1.ObjectIdentifier
		Algorithm        pkix.AlgorithmIdentifier
		EncryptedContent asn1.RawValue `asn1:"tag:0,optional"`
	}
}

type safeBag struct {
	ID         asn1.ObjectIdentifier
	Value      asn1.RawValue `asn1:"tag:0,explicit"`
	Attributes asn1.RawValue `asn1:"optional"`
}

type certBag struct {
	ID   asn1.ObjectIdentifier
	Data []byte `asn1:"tag:0,explicit"`
}

type encryptedPrivateKeyInfo struct {
	Algorithm pkix.AlgorithmIdentifier
	Data      []byte
}

// readBERPKCS12 decodes a PKCS#12 file (RFC 7292 section 4) that may be BER anywhere.
func readBERPKCS12(data, password []byte) ([]*x509.Certificate, []crypto.PrivateKey, error) {
	if len(data) > maxPKCS12Size {
		return nil, nil, fmt.Errorf("%w: file over %d bytes", errPKCS12, maxPKCS12Size)
	}
	var pfx pfxPDU
	if err := unmarshalBER(data, &pfx); err != nil {
		return nil, nil, err
	}
	if pfx.Version != 3 || !pfx.AuthSafe.ContentType.Equal(oidData) {
		return nil, nil, fmt.Errorf("%w: not a password-integrity PFX", errPKCS12Unsupported)
	}
	var authSafe []byte
	if _, err := asn1.Unmarshal(pfx.AuthSafe.Content.Bytes, &authSafe); err != nil {
		return nil, nil, errPKCS12
	}
	if pfx.MacData.Mac.Algorithm.Algorithm != nil {
		if err := checkMAC(&pfx.MacData, authSafe, password); err != nil {
			return nil, nil, err
		}
	}
	var cis []contentInfo
	if err := unmarshalBER(authSafe, &cis); err != nil {
		return nil, nil, err
	}
	var certs []*x509.Certificate
	var keys []crypto.PrivateKey
	for _, ci := range cis {
		var contents []byte
		switch {
		case ci.ContentType.Equal(oidData):
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &contents); err != nil {
				return nil, nil, errPKCS12
			}
		case ci.ContentType.Equal(oidEncryptedData):
			var ed encryptedData
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
				return nil, nil, errPKCS12
			}
			ct := implicitOctets(ed.EncryptedContentInfo.EncryptedContent)
			var err error
			if contents, err = pbDecrypt(ed.EncryptedContentInfo.Algorithm, ct, password); err != nil {
				return nil, nil, err
			}
		default:
			continue // enveloped (public-key privacy) safes are not supported; skip them
		}
		var bags []safeBag
		if err := unmarshalBER(contents, &bags); err != nil {
			return nil, nil, err
		}
		for _, bag := range bags {
			switch {
			case bag.ID.Equal(oidCertBag):
				var cb certBag
				if _, err := asn1.Unmarshal(bag.Value.Bytes, &cb); err != nil || !cb.ID.Equal(oidX509Certificate) {
					continue // SDSI and other certificate kinds are ignored
				}
				c, err := x509.ParseCertificate(cb.Data)
				if err != nil {
					return nil, nil, fmt.Errorf("%w: certificate: %v", errPKCS12, err)
				}
				certs = append(certs, c)
			case bag.ID.Equal(oidKeyBag):
				k, err := parsePKCS8(bag.Value.Bytes)
				if err != nil {
					return nil, nil, err
				}
				keys = append(keys, k)
			case bag.ID.Equal(oidShroudedKeyBag):
				var epki encryptedPrivateKeyInfo
				if _, err := asn1.Unmarshal(bag.Value.Bytes, &epki); err != nil {
					return nil, nil, errPKCS12
				}
				ber, err := pbDecrypt(epki.Algorithm, epki.Data, password)
				if err != nil {
					return nil, nil, err
				}
				der, _, err := berToDER(ber, 0)
				if err != nil {
					return nil, nil, err
				}
				k, err := parsePKCS8(der)
				if err != nil {
					return nil, nil, err
				}
				keys = append(keys, k)
			}
		}
	}
	return certs, keys, nil
}

func hashByOID(oid asn1.ObjectIdentifier) (func() hash.Hash, int) {
	switch {
	case oid.Equal(oidSHA1), oid.Equal(oidHMACSHA1):
		return sha1.New, 64
	case oid.Equal(oidHMACSHA224):
		return sha256.New224, 64
	case oid.Equal(oidSHA256), oid.Equal(oidHMACSHA256):
		return sha256.New, 64
	case oid.Equal(oidSHA384), oid.Equal(oidHMACSHA384):
		return sha512.New384, 128
	case oid.Equal(oidSHA512), oid.Equal(oidHMACSHA512):
		return sha512.New, 128
	}
	return nil, 0
}

// checkMAC verifies the PFX integrity MAC (RFC 7292 section 5.1); a mismatch means a wrong password.
func checkMAC(md *macData, authSafe, password []byte) error {
	h, v := hashByOID(md.Mac.Algorithm.Algorithm)
	if h == nil {
		return fmt.Errorf("%w: mac %v", errPKCS12Unsupported, md.Mac.Algorithm.Algorithm)
	}
	if md.Iterations < 1 || md.Iterations > maxPBKDFRounds {
		return errPKCS12
	}
	key := pkcs12KDF(h, v, bmpPassword(password), md.MacSalt, md.Iterations, 3, h().Size())
	m := hmac.New(h, key)
	m.Write(authSafe)
	if !hmac.Equal(m.Sum(nil), md.Mac.Digest) {
		return ErrWrongPassword
	}
	return nil
}

// bmpPassword is the password as a zero-terminated BMPString (RFC 7292 appendix B.1).
func bmpPassword(pw []byte) []byte {
	var out []byte
	for _, r := range utf16.Encode([]rune(string(pw))) {
		out = append(out, byte(r>>8), byte(r))
	}
	return append(out, 0, 0)
}

// pkcs12KDF is the PKCS#12 key derivation (RFC 7292 appendix B.2) for purpose id (1 key, 2 IV, 3 MAC key).
func pkcs12KDF(h func() hash.Hash, v int, pw, salt []byte, rounds int, id byte, n int) []byte {
	fill := func(src []byte) []byte {
		if len(src) == 0 {
			return nil
		}
		out := make([]byte, v*((len(src)+v-1)/v))
		for i := range out {
			out[i] = src[i%len(src)]
		}
		return out
	}
	d := bytes.Repeat([]byte{id}, v)
	ii := append(fill(salt), fill(pw)...)
	var out []byte
	for len(out) < n {
		hh := h()
		hh.Write(d)
		hh.Write(ii)
		a := hh.Sum(nil)
		for r := 1; r < rounds; r++ {
			hh.Reset()
			hh.Write(a)
			a = hh.Sum(a[:0])
		}
		out = append(out, a...)
		b := fill(a)
		for j := 0; j < len(ii); j += v {
			// I_j = (I_j + B + 1) mod 2^(8v)
			carry := 1
			for k := v - 1; k >= 0; k-- {
				s := int(ii[j+k]) + int(b[k]) + carry
				ii[j+k] = byte(s)
				carry = s >> 8
			}
		}
	}
	return out[:n]
}

type pbes2Params struct {
	KDF    pkix.AlgorithmIdentifier
	Scheme pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt      []byte
	Rounds    int
	KeyLength int                      `asn1:"optional"`
	PRF       pkix.AlgorithmIdentifier `asn1:"optional"`
}

type pbeParams struct {
	Salt   []byte
	Rounds int
}

// pbDecrypt decrypts password-based encrypted data: PBES2 (RFC 8018 section 6.2.2) or
// pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 appendix C). A bad padding means a wrong password.
func pbDecrypt(alg pkix.AlgorithmIdentifier, ct, password []byte) ([]byte, error) {
	var block cipher.Block
	var iv []byte
	switch {
	case alg.Algorithm.Equal(oidPBES2):
		var p pbes2Params
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err != nil || !p.KDF.Algorithm.Equal(oidPBKDF2) {
			return nil, errPKCS12Unsupported
		}
		var kp pbkdf2Params
		if _, err := asn1.Unmarshal(p.KDF.Parameters.FullBytes, &kp); err != nil || kp.Rounds < 1 || kp.Rounds > maxPBKDFRounds {
			return nil, errPKCS12
		}
		prf := sha1.New
		if kp.PRF.Algorithm != nil {
			if prf, _ = hashByOID(kp.PRF.Algorithm); prf == nil {
				return nil, errPKCS12Unsupported
			}
		}
		var keyLen int
		switch s := p.Scheme.Algorithm; {
		case s.Equal(oidAES128CBC):
			keyLen = 16
		case s.Equal(oidAES192CBC):
			keyLen = 24
		case s.Equal(oidAES256CBC):
			keyLen = 32
		case s.Equal(oidDESEDE3CBC):
			keyLen = 24
		default:
			return nil, errPKCS12Unsupported
		}
		if _, err := asn1.Unmarshal(p.Scheme.Parameters.FullBytes, &iv); err != nil {
			return nil, errPKCS12
		}
		key, err := pbkdf2.Key(prf, string(password), kp.Salt, kp.Rounds, keyLen)
		if err != nil {
			return nil, errPKCS12
		}
		if keyLen == 24 && p.Scheme.Algorithm.Equal(oidDESEDE3CBC) {
			block, err = des.NewTripleDESCipher(key)
		} else {
			block, err = aes.NewCipher(key)
		}
		if err != nil {
			return nil, errPKCS12
		}
	case alg.Algorithm.Equal(oidPBEWithSHA3DES):
		var p pbeParams
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err != nil || p.Rounds < 1 || p.Rounds > maxPBKDFRounds {
			return nil, errPKCS12
		}
		bmp := bmpPassword(password)
		key := pkcs12KDF(sha1.New, 64, bmp, p.Salt, p.Rounds, 1, 24)
		iv = pkcs12KDF(sha1.New, 64, bmp, p.Salt, p.Rounds, 2, 8)
		var err error
		if block, err = des.NewTripleDESCipher(key); err != nil {
			return nil, errPKCS12
		}
	default:
		return nil, fmt.Errorf("%w: %v", errPKCS12Unsupported, alg.Algorithm)
	}
	bs := block.BlockSize()
	if len(iv) != bs || len(ct) == 0 || len(ct)%bs != 0 {
		return nil, errPKCS12
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ct)
	pad := int(out[len(out)-1])
	if pad < 1 || pad > bs || subtle.ConstantTimeCompare(out[len(out)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) != 1 {
		return nil, ErrWrongPassword
	}
	return out[:len(out)-pad], nil
}

// implicitOctets returns the octets of an [n] IMPLICIT OCTET STRING, primitive or (BER) constructed from
// OCTET STRING segments (X.690 section 8.7.3).
func implicitOctets(v asn1.RawValue) []byte {
	if !v.IsCompound {
		return v.Bytes
	}
	var out []byte
	rest := v.Bytes
	for len(rest) > 0 {
		var seg []byte
		var err error
		if rest, err = asn1.Unmarshal(rest, &seg); err != nil {
			return nil
		}
		out = append(out, seg...)
	}
	return out
}
