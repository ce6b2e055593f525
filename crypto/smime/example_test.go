package smime_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// fileKeys is a Keyring over keys held in memory (a Vault-backed one would look them up by the ids).
type fileKeys []smime.Key

func (k fileKeys) KeysFor(_ context.Context, ids []cms.RecipientID) ([]smime.Key, error) {
	return k, nil
}

func ExampleProcess() {
	key := identity(&testing.T{}, 2048, "Bob")
	msg := encryptedMessage(&testing.T{}, "Content-Type: text/plain\r\n\r\nThe secret is 42.\r\n", key.Cert)

	res := smime.Process(context.Background(), msg, fileKeys{key}, &smime.Options{StatusParams: []string{"via=example"}})
	fmt.Println(res.Status, res.Info.ContentCipher, res.Info.Authenticated)
	fmt.Printf("%s", res.Served[bytes.LastIndex(res.Served, []byte("\r\n\r\n"))+4:])
	// Output:
	// decrypted aes-256-cbc false
	// The secret is 42.
}
