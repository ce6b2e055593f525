package mimepart

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"
)

// Errors of Decode. Callers decide what an undecodable body means to them (crypto/smime: not a CMS object;
// BINARY: NO [UNKNOWN-CTE], RFC 3516 section 4.3; SEARCH: the body is matched as it is stored).
var (
	// ErrUnknownEncoding is a Content-Transfer-Encoding other than 7bit, 8bit, binary, base64 and
	// quoted-printable (RFC 2045 section 6.1; x-token encodings are not understood).
	ErrUnknownEncoding = errors.New("mimepart: unknown content transfer encoding")
	// ErrBadEncoding is a base64 or quoted-printable body that does not decode.
	ErrBadEncoding = errors.New("mimepart: bad content transfer encoding")
)

// NormalizeEncoding returns a Content-Transfer-Encoding value as Decode compares it: trimmed and lowercased.
func NormalizeEncoding(cte string) string { return strings.ToLower(strings.TrimSpace(cte)) }

// IsIdentity reports whether the (normalized) encoding cte leaves the body as it is: none, 7bit, 8bit or binary.
func IsIdentity(cte string) bool {
	switch cte {
	case "", "7bit", "8bit", "binary":
		return true
	}
	return false
}

// Decode undoes the content transfer encoding cte (RFC 2045 section 6; case and surrounding white space
// ignored) of body, the one transfer decoder of the project. The identity encodings (none, 7bit, 8bit, binary)
// return body itself, not a copy; base64 and quoted-printable return a fresh buffer. base64 is read as RFC 2045
// section 6.8 asks: line breaks, spaces and tabs are skipped and missing padding is accepted; any other byte
// outside the alphabet fails with ErrBadEncoding, as does broken quoted-printable (RFC 2045 section 6.7, read
// by mime/quotedprintable). Any other encoding fails with ErrUnknownEncoding.
func Decode(cte string, body []byte) ([]byte, error) {
	switch c := NormalizeEncoding(cte); {
	case IsIdentity(c):
		return body, nil
	case c == "base64":
		return DecodeBase64(body)
	case c == "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if err != nil {
			return nil, ErrBadEncoding
		}
		return out, nil
	}
	return nil, ErrUnknownEncoding
}

// DecodeBase64 decodes a base64 body (RFC 2045 section 6.8) into a fresh buffer of (nearly) the exact decoded
// size: line breaks, spaces and tabs skipped, padding optional. It fails with ErrBadEncoding for a byte outside
// the alphabet or a truncated last group.
func DecodeBase64(src []byte) ([]byte, error) {
	n := len(src) - bytes.Count(src, []byte{'\n'}) - bytes.Count(src, []byte{'\r'})
	dst := make([]byte, base64.StdEncoding.DecodedLen(n+3))
	k, err := base64.StdEncoding.Decode(dst, src) // fast path: lines of whole groups, padded
	if err == nil {
		return dst[:k], nil
	}
	// Slow path: white space inside lines, or missing padding.
	return DecodeBase64InPlace(append(dst[:0:0], src...))
}

// base64Value maps a base64 alphabet byte (RFC 4648 section 4) to its value; 0xfe marks white space that
// RFC 2045 section 6.8 lets decoders skip, 0xff anything else.
var base64Value = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = byte(i)
	}
	for _, c := range " \t\r\n" {
		t[c] = 0xfe
	}
	return t
}()

// DecodeBase64Prefix decodes base64 text from src into dst until dst is full (a whole number of 3-byte groups
// only), src ends, or padding or an invalid byte is met; it returns the bytes written and read. It is for
// looking at the start of a large body without decoding all of it.
func DecodeBase64Prefix(dst, src []byte) (int, int) {
	w, r := 0, 0
	var acc uint32
	k := 0
	for r < len(src) && w+3 <= len(dst) {
		v := base64Value[src[r]]
		if v == 0xff {
			break
		}
		r++
		if v == 0xfe {
			continue
		}
		acc = acc<<6 | uint32(v)
		if k++; k == 4 {
			dst[w], dst[w+1], dst[w+2] = byte(acc>>16), byte(acc>>8), byte(acc)
			w += 3
			acc, k = 0, 0
		}
	}
	return w, r
}

// DecodeBase64InPlace decodes a base64 body by DecodeBase64's rules into the start of b itself and returns that
// prefix: the write position never passes the read position, so no byte is overwritten before it is read. It
// fails with ErrBadEncoding for a byte outside the alphabet, padding followed by more text, or a truncated last
// group; b is then partly overwritten.
func DecodeBase64InPlace(b []byte) ([]byte, error) {
	w := 0
	var acc uint32
	k := 0
	r := 0
	for ; r < len(b); r++ {
		v := base64Value[b[r]]
		if v == 0xfe {
			continue
		}
		if v == 0xff {
			if b[r] == '=' {
				break
			}
			return nil, ErrBadEncoding
		}
		acc = acc<<6 | uint32(v)
		if k++; k == 4 {
			b[w], b[w+1], b[w+2] = byte(acc>>16), byte(acc>>8), byte(acc)
			w += 3
			acc, k = 0, 0
		}
	}
	// Only padding and white space may follow.
	for ; r < len(b); r++ {
		if c := b[r]; c != '=' && base64Value[c] != 0xfe {
			return nil, ErrBadEncoding
		}
	}
	switch k {
	case 0:
	case 2:
		b[w] = byte(acc >> 4)
		w++
	case 3:
		b[w], b[w+1] = byte(acc>>10), byte(acc>>2)
		w += 2
	default:
		return nil, ErrBadEncoding
	}
	return b[:w], nil
}
