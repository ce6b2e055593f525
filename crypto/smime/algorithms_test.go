package smime_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/keystore"
)

const cmsTestdata = "../cms/testdata"

// TestProcessAlgorithms wraps every openssl-made EnvelopedData/AuthEnvelopedData fixture of package cms (RSA
// v1.5 and OAEP, ECDH P-256/384/521, key identifiers, BER streams, CBC/GCM; test-only keys) in a message and
// checks that Process serves the plaintext openssl recorded, with a keyring holding all test keys, only some
// of which are recipients.
func TestProcessAlgorithms(t *testing.T) {
	var keys []smime.Key
	for _, name := range []string{"rsa", "rsa2", "p256", "p384", "p521", "x25519", "x448"} {
		chain, key, err := keystore.MergeKeyFiles([][]byte{
			mustRead(t, filepath.Join(cmsTestdata, "keys", name+".key")),
			mustRead(t, filepath.Join(cmsTestdata, "keys", name+".pem")),
		}, nil)
		if err != nil {
			t.Fatalf("key %s: %v", name, err)
		}
		keys = append(keys, smime.Key{Cert: chain[0], Private: key})
	}
	fixtures, _ := filepath.Glob(filepath.Join(cmsTestdata, "fixtures", "*.der"))
	n := 0
	for _, f := range fixtures {
		name := strings.TrimSuffix(filepath.Base(f), ".der")
		if strings.HasPrefix(name, "signed") {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			der := mustRead(t, f)
			want := mustRead(t, strings.TrimSuffix(f, ".der")+".out")
			label := "enveloped-data"
			if strings.Contains(name, "gcm") {
				label = "authEnveloped-data"
			}
			msg := []byte(outerHeader + "Content-Type: application/pkcs7-mime; smime-type=" + label +
				"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64(der))
			res := smime.Process(context.Background(), msg, &ring{keys: keys}, nil)
			if res.Status != smime.Decrypted {
				t.Fatalf("Process() = %v %q", res.Status, res.Reason)
			}
			if !bytes.HasSuffix(res.Served, []byte(crlf(string(want)))) {
				t.Fatalf("served %q does not end with the plaintext %q", head(res.Served), head(want))
			}
			if auth := strings.Contains(name, "gcm"); res.Info.Authenticated != auth ||
				!bytes.Contains(res.Served, []byte(map[bool]string{true: "authenticated=yes", false: "authenticated=no"}[auth])) {
				t.Errorf("Info %+v", res.Info)
			}
		})
	}
	if n < 30 {
		t.Errorf("only %d fixtures", n)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
