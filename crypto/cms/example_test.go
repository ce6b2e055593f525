package cms_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

func mustPEM(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	blk, _ := pem.Decode(b)
	return blk.Bytes
}

// Decrypting a streamed (BER) message with the recipient's certificate and key.
func ExampleEnvelope_Decrypt() {
	cert, _ := x509.ParseCertificate(mustPEM("testdata/keys/rsa.pem"))
	key, _ := x509.ParsePKCS8PrivateKey(mustPEM("testdata/keys/rsa.key"))
	msg, _ := os.ReadFile("testdata/fixtures/rsa-oaep-sha256-keyid-stream.der")

	env, err := cms.Parse(msg)
	if err != nil {
		fmt.Println(err)
		return
	}
	plaintext, info, err := env.Decrypt(cert, key)
	switch {
	case errors.Is(err, cms.ErrNoRecipient):
		fmt.Println("not for this certificate")
	case err != nil:
		fmt.Println(err)
	default:
		fmt.Printf("%d bytes, %s, %s, authenticated=%v\n", len(plaintext), info.KeyAlgorithm, info.ContentCipher, info.Authenticated)
	}
	// Output: 33643 bytes, rsa-oaep-sha256, aes-256-cbc, authenticated=false
}
