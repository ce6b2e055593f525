package smime_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
)

const corpus = "../../testdata/thunderbird"

// ring is a fixed Keyring; err, when set, is returned instead.
type ring struct {
	keys  []smime.Key
	err   error
	calls int
}

func (r *ring) KeysFor(_ context.Context, ids []cms.RecipientID) ([]smime.Key, error) {
	r.calls++
	if r.err != nil {
		return nil, r.err
	}
	return r.keys, nil
}

var errVaultDown = errors.New("vault: connection refused")

var (
	bobOnce sync.Once
	bobKey  smime.Key
	bobErr  error
)

// bob returns Bob's key from the Thunderbird corpus (PKCS#12, password nss).
func bob(t testing.TB) smime.Key {
	t.Helper()
	bobOnce.Do(func() {
		data, err := os.ReadFile(filepath.Join(corpus, "Bob.p12"))
		if err != nil {
			bobErr = err
			return
		}
		chain, key, err := keystore.ParseKeyFile(data, []byte("nss"))
		if err != nil {
			bobErr = err
			return
		}
		bobKey = smime.Key{Cert: chain[0], Private: key}
	})
	if bobErr != nil {
		t.Fatalf("loading Bob.p12: %v", bobErr)
	}
	return bobKey
}

// identity makes a test-only RSA key and self-signed certificate.
func identity(t testing.TB, bits int, cn string) smime.Key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return smime.Key{Cert: cert, Private: k}
}

var pkcs7Mu sync.Mutex

// envelop encrypts content to certs as DER EnvelopedData, RSA PKCS#1 v1.5 and AES-256-CBC (github.com/smallstep/pkcs7).
func envelop(t testing.TB, content []byte, certs ...*x509.Certificate) []byte {
	t.Helper()
	pkcs7Mu.Lock()
	defer pkcs7Mu.Unlock()
	pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC
	der, err := pkcs7.Encrypt(content, certs)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// b64 encodes b in 76-character lines with CRLF (RFC 2045 section 6.8).
func b64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var sb strings.Builder
	sb.Grow(len(s) + len(s)/76*2 + 2)
	for len(s) > 76 {
		sb.WriteString(s[:76])
		sb.WriteString("\r\n")
		s = s[76:]
	}
	sb.WriteString(s)
	sb.WriteString("\r\n")
	return sb.String()
}

const outerHeader = "From: Alice <alice@example.com>\r\n" +
	"To: Bob <bob@example.com>\r\n" +
	"Subject: test\r\n" +
	"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n" +
	"Message-ID: <test@example.com>\r\n" +
	"MIME-Version: 1.0\r\n"

// p7mPart is an application/pkcs7-mime entity holding der.
func p7mPart(der []byte) string {
	return "Content-Type: application/pkcs7-mime; name=smime.p7m; smime-type=enveloped-data\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=smime.p7m\r\n" +
		"Content-Description: S/MIME Encrypted Message\r\n\r\n" + b64(der)
}

// encryptedMessage is a whole-message encryption of entity to certs.
func encryptedMessage(t testing.TB, entity string, certs ...*x509.Certificate) []byte {
	return []byte(outerHeader + p7mPart(envelop(t, []byte(entity), certs...)))
}

func statusDecrypted(k smime.Key, cipher, auth string) string {
	sum := sha256.Sum256(k.Cert.Raw)
	return "X-Smimeproxy-Status: decrypted; key=sha256:" + hex.EncodeToString(sum[:]) + "; cipher=" + cipher +
		"; authenticated=" + auth + "\r\n"
}

// headerFields splits the header of msg into fields (independently of the package's parser) and returns them
// and the offset of the body.
func headerFields(msg []byte) ([]string, int) {
	var fields []string
	p := 0
	for p < len(msg) {
		e := bytes.IndexByte(msg[p:], '\n')
		if e < 0 {
			e = len(msg)
		} else {
			e += p + 1
		}
		line := string(msg[p:e])
		if strings.TrimRight(line, "\r\n") == "" {
			return fields, e
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += line
		} else {
			fields = append(fields, line)
		}
		p = e
	}
	return fields, len(msg)
}

// outerKept is the outer header of msg without Content-* fields, CRLF canonical.
func outerKept(msg []byte) string {
	fields, _ := headerFields(msg)
	var sb strings.Builder
	for _, f := range fields {
		if !strings.HasPrefix(strings.ToLower(f), "content-") {
			sb.WriteString(crlf(f))
		}
	}
	return sb.String()
}

// crlf turns bare LFs into CRLF.
func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// run runs a command and returns its standard output; it fails the test on error.
func run(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(testenv.LookPath(t, name), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.String())
	}
	return out
}

// bobPEM writes Bob's key and certificate as PEM (via openssl) for openssl commands.
func bobPEM(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bob.pem")
	run(t, nil, "openssl", "pkcs12", "-in", filepath.Join(corpus, "Bob.p12"), "-passin", "pass:nss", "-nodes",
		"-out", p)
	return p
}
