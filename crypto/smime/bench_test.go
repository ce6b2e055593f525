package smime_test

//lint:file-ignore SA1019 tests build RSA PKCS #1 v1.5 key transport, what most S/MIME senders use (RFC 8551 section 2.3)

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// plaintextOf returns a text/plain entity of about n bytes in 76-character CRLF lines.
func plaintextOf(n int) []byte {
	var b bytes.Buffer
	b.Grow(n + 100)
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	line := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 3)[:74] + "\r\n"
	for b.Len() < n {
		b.WriteString(line)
	}
	return b.Bytes()
}

// benchMessage is a whole-message encryption (RSA-2048 v1.5, AES-256-CBC, DER) of about size bytes.
func benchMessage(tb testing.TB, size int) ([]byte, smime.Key) {
	k := identity(tb, 2048, "Bench")
	// base64 with line breaks grows the DER by 78/57.
	msg := encryptedMessage(tb, string(plaintextOf(size*57/78)), k.Cert)
	return msg, k
}

var benchSizes = []struct {
	name string
	size int
}{{"100KB", 100 << 10}, {"10MB", 10 << 20}}

// BenchmarkProcess measures Process on whole-message encryptions; compare ns/op with BenchmarkCryptoFloor
// of the same size (goal: at most 2x).
func BenchmarkProcess(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			msg, k := benchMessage(b, s.size)
			kr := &ring{keys: []smime.Key{k}}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if res := smime.Process(context.Background(), msg, kr, nil); res.Status != smime.Decrypted {
					b.Fatalf("Process() = %v %q", res.Status, res.Reason)
				}
			}
		})
	}
}

// BenchmarkCryptoFloor is the least any decryption of such a message costs: one RSA-2048 private-key
// operation, base64-decoding the body and AES-256-CBC over it, into preallocated buffers.
func BenchmarkCryptoFloor(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			msg, k := benchMessage(b, s.size)
			priv := k.Private.(*rsa.PrivateKey)
			cek := make([]byte, 32)
			rand.Read(cek)
			wrapped, err := rsa.EncryptPKCS1v15(rand.Reader, &priv.PublicKey, cek)
			if err != nil {
				b.Fatal(err)
			}
			body := msg[bytes.Index(msg, []byte("\r\n\r\n"))+4:]
			buf := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
			iv := make([]byte, 16)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				key, err := rsa.DecryptPKCS1v15(nil, priv, wrapped)
				if err != nil {
					b.Fatal(err)
				}
				n, err := base64.StdEncoding.Decode(buf, body)
				if err != nil {
					b.Fatal(err)
				}
				block, _ := aes.NewCipher(key)
				ct := buf[:n-n%16]
				cipher.NewCBCDecrypter(block, iv).CryptBlocks(ct, ct)
			}
		})
	}
}

// TestProcessMemory: a 50 MB encrypted message is processed with at most 2.5x its size allocated in total
// (which bounds the peak), for DER (github.com/smallstep/pkcs7) and streamed BER (openssl cms -stream, as NSS and
// OpenSSL send it; package cms then rewrites it to DER once).
func TestProcessMemory(t *testing.T) {
	const size = 50 << 20
	t.Run("DER", func(t *testing.T) {
		msg, k := benchMessage(t, size)
		checkAlloc(t, msg, k)
	})
	t.Run("BER", func(t *testing.T) {
		k := identity(t, 2048, "Bench")
		dir := t.TempDir()
		plain, cert := filepath.Join(dir, "plain"), filepath.Join(dir, "cert.pem")
		if err := os.WriteFile(plain, plaintextOf(size*57/78), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cert, pemCert(k), 0o600); err != nil {
			t.Fatal(err)
		}
		out := run(t, nil, "openssl", "cms", "-encrypt", "-stream", "-aes256", "-binary", "-in", plain, cert)
		msg := []byte(outerHeader[:strings.Index(outerHeader, "MIME-Version")] + crlf(string(out)))
		checkAlloc(t, msg, k)
	})
}

func checkAlloc(t *testing.T, msg []byte, k smime.Key) {
	t.Helper()
	kr := &ring{keys: []smime.Key{k}}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res := smime.Process(context.Background(), msg, kr, &smime.Options{MaxSize: 64 << 20})
	runtime.ReadMemStats(&after)
	if res.Status != smime.Decrypted {
		t.Fatalf("Process() = %v %q", res.Status, res.Reason)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	ratio := float64(alloc) / float64(len(msg))
	t.Logf("message %d bytes, served %d, allocated %d (%.2fx)", len(msg), len(res.Served), alloc, ratio)
	if ratio > 2.5 {
		t.Errorf("allocated %.2fx the message size, want <= 2.5x", ratio)
	}
	if len(res.Served) == 0 {
		t.Error("nothing served")
	}
}
