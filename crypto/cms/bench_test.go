package cms

//lint:file-ignore SA1019 tests build RSA PKCS #1 v1.5 key transport, what most S/MIME senders use (RFC 8551 section 2.3)

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"testing"
)

var benchSizes = []int{4 << 10, 1 << 20, 16 << 20}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// BenchmarkDecrypt measures Parse plus Decrypt per key management, content cipher, encoding and size. Compare
// with BenchmarkCryptoFloor (the unavoidable RSA private operation and AES pass) at the same size.
func BenchmarkDecrypt(b *testing.B) {
	variants := []struct {
		name string
		who  string
		r    encRecipient
		o    encOptions
	}{
		{"rsa-v15-aes256-cbc-der", "rsa", encRecipient{}, encOptions{content: oidAES256CBC}},
		{"rsa-v15-aes256-cbc-ber", "rsa", encRecipient{}, encOptions{content: oidAES256CBC, ber: true}},
		{"rsa-oaep-aes256-gcm-ber", "rsa", encRecipient{oaep: &rsa.OAEPOptions{Hash: crypto.SHA256}}, encOptions{content: oidAES256GCM, ber: true}},
		{"p256-aes256-gcm-der", "p256", encRecipient{}, encOptions{content: oidAES256GCM}},
		{"x25519-chacha20-der", "x25519", encRecipient{}, encOptions{content: oidChaCha20}},
	}
	for _, v := range variants {
		cert, key := loadCert(b, v.who), loadKey(b, v.who)
		for _, size := range benchSizes {
			msg := bytes.Repeat([]byte{'x'}, size)
			r := v.r
			r.cert = cert
			in := testEncrypt(b, msg, v.o, r)
			b.Run(v.name+"/"+sizeName(size), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					env, err := Parse(in)
					if err != nil {
						b.Fatal(err)
					}
					if _, _, err := env.Decrypt(cert, key); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkCryptoFloor is the cost no decryptor can avoid for rsa-v15-aes256-cbc: one RSA-2048 private
// operation and one AES-256-CBC pass over the body into a preallocated buffer.
func BenchmarkCryptoFloor(b *testing.B) {
	cert, key := loadCert(b, "rsa"), loadKey(b, "rsa").(*rsa.PrivateKey)
	cek := make([]byte, 32)
	rand.Read(cek)
	ek, err := rsa.EncryptPKCS1v15(rand.Reader, cert.PublicKey.(*rsa.PublicKey), cek)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range benchSizes {
		ct := make([]byte, size)
		out := make([]byte, size)
		iv := make([]byte, 16)
		b.Run("rsa2048-aes256-cbc/"+sizeName(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				k := make([]byte, 32)
				if err := rsa.DecryptPKCS1v15SessionKey(nil, key, ek, k); err != nil {
					b.Fatal(err)
				}
				block, _ := aes.NewCipher(k)
				cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ct)
			}
		})
	}
}
