package vaultcfg

import (
	"crypto/aes"
	"encoding/binary"
	"errors"
)

// kwpAIVPrefix is the constant half of the alternative initial value (RFC 5649 section 3).
const kwpAIVPrefix = 0xA65959A6

// kwpMaxLen bounds the plaintext length: the message length indicator is 32 bits (RFC 5649 section 3).
const kwpMaxLen = 1<<32 - 1

var errKWP = errors.New("vaultcfg: aes key wrap with padding failed")

// wrapKWP wraps plaintext under kek with AES Key Wrap with Padding (RFC 5649 section 4.1). kek must be 16, 24 or
// 32 bytes; it fails for a bad kek size, an empty plaintext, or one longer than 2^32-1 bytes.
func wrapKWP(kek, plaintext []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, errKWP
	}
	if len(plaintext) == 0 || uint64(len(plaintext)) > kwpMaxLen {
		return nil, errKWP
	}
	// RFC 5649 section 3: AIV = A65959A6 || MLI (32-bit big-endian octet length); pad with zeros to a multiple
	// of 8 octets.
	var aiv [8]byte
	binary.BigEndian.PutUint32(aiv[:4], kwpAIVPrefix)
	binary.BigEndian.PutUint32(aiv[4:], uint32(len(plaintext)))
	n := (len(plaintext) + 7) / 8
	out := make([]byte, 8+8*n)
	copy(out[8:], plaintext)
	if n == 1 {
		// RFC 5649 section 4.1 step 2: a single block is encrypted directly: C = ENC(K, AIV | P1).
		copy(out[:8], aiv[:])
		block.Encrypt(out, out)
		return out, nil
	}
	// RFC 5649 section 4.1 step 2, otherwise: the RFC 3394 section 2.2.1 wrapping process with AIV as IV.
	a := aiv
	var b [16]byte
	for j := 0; j <= 5; j++ {
		for i := 1; i <= n; i++ {
			r := out[8*i : 8*i+8]
			copy(b[:8], a[:])
			copy(b[8:], r)
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(b[:8])^t)
			copy(r, b[8:])
		}
	}
	copy(out[:8], a[:])
	return out, nil
}

// unwrapKWP reverses wrapKWP (RFC 5649 section 4.2). It fails, without saying why, when the integrity check of
// section 3 does not hold (wrong key, corrupted or truncated ciphertext).
func unwrapKWP(kek, ciphertext []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, errKWP
	}
	if len(ciphertext) < 16 || len(ciphertext)%8 != 0 {
		return nil, errKWP
	}
	n := len(ciphertext)/8 - 1
	out := make([]byte, len(ciphertext))
	copy(out, ciphertext)
	var a [8]byte
	if n == 1 {
		// RFC 5649 section 4.2 step 1, n = 1: AIV | P1 = DEC(K, C0 | C1).
		block.Decrypt(out, out)
		copy(a[:], out[:8])
	} else {
		// RFC 3394 section 2.2.2 unwrapping process, returning the recovered IV as the AIV.
		copy(a[:], out[:8])
		var b [16]byte
		for j := 5; j >= 0; j-- {
			for i := n; i >= 1; i-- {
				r := out[8*i : 8*i+8]
				t := uint64(n*j + i)
				binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(a[:])^t)
				copy(b[8:], r)
				block.Decrypt(b[:], b[:])
				copy(a[:], b[:8])
				copy(r, b[8:])
			}
		}
	}
	// RFC 5649 section 3 integrity check: the prefix, 8(n-1) < MLI <= 8n, and zero padding.
	mli := int(binary.BigEndian.Uint32(a[4:]))
	if binary.BigEndian.Uint32(a[:4]) != kwpAIVPrefix || mli <= 8*(n-1) || mli > 8*n {
		return nil, errKWP
	}
	p := out[8:]
	var pad byte
	for _, c := range p[mli:] {
		pad |= c
	}
	if pad != 0 {
		return nil, errKWP
	}
	return p[:mli:mli], nil
}
