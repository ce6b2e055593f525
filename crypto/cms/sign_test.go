package cms

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// The signer and encryptor are checked against this package's own Verify and Decrypt, and against OpenSSL
// (`openssl cms -verify` / `-decrypt`) where it is installed.

var testContent = []byte("Content-Type: text/plain; charset=utf-8\r\n\r\nHello, Bob.\r\n")

func TestSignVerifies(t *testing.T) {
	for _, name := range []string{"rsa", "p256", "p384"} {
		t.Run(name, func(t *testing.T) {
			cert, key := loadCert(t, name), loadKey(t, name).(crypto.Signer)
			when := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
			der, err := Sign(testContent, key, []*x509.Certificate{cert, loadCert(t, "ca")}, &SignOptions{SigningTime: when})
			if err != nil {
				t.Fatalf("Sign() = %v", err)
			}
			s, err := Verify(der, testContent, nil)
			if err != nil {
				t.Fatalf("Verify(Sign()) = %v", err)
			}
			if !s.Signer.Equal(cert) || s.Digest != "sha256" || !s.SigningTime.Equal(when) || len(s.Certificates) != 2 {
				t.Errorf("Verify(Sign()) = signer %v digest %s time %v certs %d", s.Signer.Subject, s.Digest, s.SigningTime, len(s.Certificates))
			}
			if !HasCapability(s.CapabilitiesRaw, OIDAES256GCM) {
				t.Errorf("capabilities %x lack aes256-gcm", s.CapabilitiesRaw)
			}
			// RFC 5652 section 5.4: a changed content must fail as BadDigest.
			var ve *VerifyError
			if _, err := Verify(der, append([]byte("X"), testContent...), nil); !errors.As(err, &ve) || ve.Reason != BadDigest {
				t.Errorf("Verify(changed content) = %v, want bad-digest", err)
			}
			opensslVerify(t, der, testContent, filepath.Join(keysDir, "ca.pem"))
		})
	}
}

func TestSignWrongKey(t *testing.T) {
	_, err := Sign(testContent, loadKey(t, "rsa2").(crypto.Signer), []*x509.Certificate{loadCert(t, "rsa")}, nil)
	if !errors.Is(err, ErrSignerKey) {
		t.Errorf("Sign(key of another certificate) = %v, want ErrSignerKey", err)
	}
}

// failingSigner is fault injection: a remote key whose service is down.
type failingSigner struct{ crypto.Signer }

func (failingSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("vault unreachable")
}

func TestSignKeyFailure(t *testing.T) {
	_, err := Sign(testContent, failingSigner{loadKey(t, "rsa").(crypto.Signer)}, []*x509.Certificate{loadCert(t, "rsa")}, nil)
	if !errors.Is(err, ErrKeyOperation) {
		t.Errorf("Sign(failing key) = %v, want ErrKeyOperation", err)
	}
}

func TestSignedAttributesSorted(t *testing.T) {
	attrs, err := signedAttributes(make([]byte, 32), time.Now(), DefaultCapabilities())
	if err != nil {
		t.Fatal(err)
	}
	s := cryptobyte.String(attrs)
	var set cryptobyte.String
	if !s.ReadASN1(&set, cbasn1.SET) {
		t.Fatal("not a SET")
	}
	var prev []byte
	for n := 0; !set.Empty(); n++ {
		var el cryptobyte.String
		if !set.ReadASN1Element(&el, cbasn1.SEQUENCE) {
			t.Fatal("bad attribute")
		}
		if prev != nil && bytes.Compare(prev, el) > 0 {
			t.Errorf("attribute %d sorts before its predecessor: not DER", n)
		}
		prev = el
	}
}

func TestEncryptDecrypts(t *testing.T) {
	rsaC, p256, p384 := loadCert(t, "rsa"), loadCert(t, "p256"), loadCert(t, "p384")
	oaepCert, oaepKey := oaepCertificate(t)
	certs := []*x509.Certificate{rsaC, p256, p384, oaepCert}
	keys := []crypto.PrivateKey{loadKey(t, "rsa"), loadKey(t, "p256"), loadKey(t, "p384"), oaepKey}
	wantAlg := []string{"rsa-pkcs1v15", "ecdh-p256-sha256kdf-aes256-wrap", "ecdh-p384-sha384kdf-aes256-wrap", "rsa-oaep-sha256"}
	for _, auth := range []bool{false, true} {
		der, err := Encrypt(testContent, certs, &EncryptOptions{Authenticated: auth})
		if err != nil {
			t.Fatalf("Encrypt(auth=%v) = %v", auth, err)
		}
		env, err := Parse(der)
		if err != nil {
			t.Fatalf("Parse(Encrypt()) = %v", err)
		}
		if env.Authenticated() != auth || len(env.Recipients()) != len(certs) {
			t.Fatalf("Parse(Encrypt(auth=%v)): authenticated %v, %d recipients", auth, env.Authenticated(), len(env.Recipients()))
		}
		for i := range certs {
			env, _ := Parse(der)
			pt, info, err := env.Decrypt(certs[i], keys[i])
			if err != nil {
				t.Fatalf("auth=%v: Decrypt(%s) = %v", auth, wantAlg[i], err)
			}
			if !bytes.Equal(pt, testContent) || info.KeyAlgorithm != wantAlg[i] || info.Authenticated != auth {
				t.Errorf("auth=%v: Decrypt(%s) = %q, %+v", auth, wantAlg[i], pt, info)
			}
		}
		for _, name := range []string{"rsa", "p256"} {
			if got := opensslDecrypt(t, der, name); got != nil && !bytes.Equal(got, testContent) {
				t.Errorf("openssl cms -decrypt (%s, auth=%v) = %q", name, auth, got)
			}
		}
	}
}

func TestEncryptUnsupportedKey(t *testing.T) {
	_, err := Encrypt(testContent, []*x509.Certificate{loadCert(t, "x448")}, nil)
	if !errors.Is(err, ErrRecipientKey) {
		t.Errorf("Encrypt(x448 certificate) = %v, want ErrRecipientKey", err)
	}
}

func TestWrapAESRoundTrip(t *testing.T) {
	// RFC 3394 section 4.6: 256-bit key data with a 256-bit KEK.
	kek := mustHex(t, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
	key := mustHex(t, "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
	want := mustHex(t, "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
	got, err := wrapAES(kek, key)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("wrapAES() = %X, %v, want %X", got, err, want)
	}
	if back, err := unwrapAES(kek, got); err != nil || !bytes.Equal(back, key) {
		t.Errorf("unwrapAES(wrapAES()) = %X, %v", back, err)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'A' && c <= 'F':
				v |= byte(c - 'A' + 10)
			}
		}
		b[i] = v
	}
	return b
}

// oaepCertificate returns a certificate whose key is an id-RSAES-OAEP key without parameters (RFC 4055
// section 4.1), made by replacing the rsaEncryption SPKI of a Go-made certificate (the signature is then
// wrong, which encryption never checks).
func oaepCertificate(t *testing.T) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "oaep"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidRSAESOAEP) })
		b.AddASN1BitString(x509.MarshalPKCS1PublicKey(&key.PublicKey))
	})
	newSPKI := b.BytesOrPanic()
	// Re-wrap the TBS body with a fresh length, then the certificate.
	var tb cryptobyte.Builder
	inner := cryptobyte.String(c.RawTBSCertificate)
	var body cryptobyte.String
	inner.ReadASN1(&body, cbasn1.SEQUENCE)
	tb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(bytes.Replace(body, c.RawSubjectPublicKeyInfo, newSPKI, 1))
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11})
			b.AddASN1NULL()
		})
		b.AddASN1BitString(make([]byte, 256))
	})
	oc, err := x509.ParseCertificate(tb.BytesOrPanic())
	if err != nil {
		t.Fatalf("oaep certificate: %v", err)
	}
	return oc, key
}

// opensslVerify checks a detached signature with `openssl cms -verify` (testenv.LookPath: the test skips in the
// fast tier without openssl).
func opensslVerify(t *testing.T, der, content []byte, caFile string) {
	t.Helper()
	openssl := testenv.LookPath(t, "openssl")
	dir := t.TempDir()
	sig, data := filepath.Join(dir, "sig.der"), filepath.Join(dir, "data")
	os.WriteFile(sig, der, 0o600)
	os.WriteFile(data, content, 0o600)
	out, err := exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-content", data,
		"-CAfile", caFile, "-purpose", "any", "-out", os.DevNull).CombinedOutput()
	if err != nil {
		t.Errorf("openssl cms -verify: %v: %s", err, out)
	}
}

// opensslDecrypt decrypts with `openssl cms -decrypt` and the test key name (testenv.LookPath: the test skips
// in the fast tier without openssl).
func opensslDecrypt(t *testing.T, der []byte, name string) []byte {
	t.Helper()
	openssl := testenv.LookPath(t, "openssl")
	dir := t.TempDir()
	in := filepath.Join(dir, "in.der")
	os.WriteFile(in, der, 0o600)
	out, err := exec.Command(openssl, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", in,
		"-recip", filepath.Join(keysDir, name+".pem"), "-inkey", filepath.Join(keysDir, name+".key")).Output()
	if err != nil {
		t.Errorf("openssl cms -decrypt (%s): %v", name, err)
		return []byte{}
	}
	return out
}
