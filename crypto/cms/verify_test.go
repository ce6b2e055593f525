package cms

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tbCorpus is the NSS/Thunderbird corpus.
const tbCorpus = "../../testdata/thunderbird"

// tbSignature returns the CMS object of a Thunderbird corpus message: the base64 body of an opaque message
// (detached == nil), or the signature part and the signed part of a multipart/signed. The MIME splitting is
// ad hoc (enough for this corpus); package smime does it properly.
func tbSignature(t testing.TB, name string) (der, detached []byte) {
	t.Helper()
	msg, err := os.ReadFile(filepath.Join(tbCorpus, name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(msg)
	hdrEnd := strings.Index(s, "\r\n\r\n")
	if i := strings.Index(s, "boundary=\""); i >= 0 && i < hdrEnd {
		b := s[i+len("boundary=\""):]
		delim := "\r\n--" + b[:strings.IndexByte(b, '"')]
		parts := strings.Split(s[hdrEnd:], delim)
		// parts[0] is the preamble, then the signed part, the signature part, and the epilogue.
		signed := strings.TrimPrefix(parts[1], "\r\n")
		sigPart := parts[2]
		body := sigPart[strings.Index(sigPart, "\r\n\r\n")+4:]
		return decode64(t, body), []byte(signed)
	}
	return decode64(t, s[hdrEnd+4:]), nil
}

func decode64(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.NewReplacer("\r", "", "\n", "", " ", "").Replace(s)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyThunderbirdOpaque(t *testing.T) {
	der, _ := tbSignature(t, "alice.sig.SHA256.opaque.eml")
	s, err := Verify(der, nil, nil)
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	if s.Digest != "sha256" || s.Weak || s.SignatureAlgorithm != "rsa-pkcs1v15" || !s.SignerFromMessage {
		t.Errorf("Verify() = digest %s weak %v alg %s fromMessage %v", s.Digest, s.Weak, s.SignatureAlgorithm, s.SignerFromMessage)
	}
	if s.Signer.Subject.CommonName != "Alice" {
		t.Errorf("signer = %v, want Alice", s.Signer.Subject)
	}
	if s.SigningTime.IsZero() || s.SigningTime.Year() < 2020 {
		t.Errorf("signing time = %v", s.SigningTime)
	}
	if s.Capabilities != nil || s.CapabilitiesRaw != nil {
		t.Errorf("SMIMECapabilities %v, but this message has none", s.Capabilities)
	}
	if !bytes.Contains(s.Content, []byte("Content-Type:")) || !s.ContentType.Equal(OIDData) {
		t.Errorf("content = %.40q, type %v: want the encapsulated MIME entity", s.Content, s.ContentType)
	}
	// SHA-1 verifies but is weak (RFC 8551 section 2.1).
	der1, _ := tbSignature(t, "alice.sig.SHA1.opaque.eml")
	if s, err := Verify(der1, nil, nil); err != nil || !s.Weak || s.Digest != "sha1" {
		t.Errorf("Verify(SHA-1) = %v, %v; want weak sha1", s, err)
	}
}

func TestVerifyThunderbirdDetached(t *testing.T) {
	der, signed := tbSignature(t, "alice.dsig.SHA512.multipart.eml")
	if _, err := Verify(der, signed, nil); err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	// Without the content: a detached signature cannot be checked.
	if _, err := Verify(der, nil, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("Verify(no content) = %v, want ErrMalformed", err)
	}
	// One changed byte of content: messageDigest no longer matches (RFC 5652 section 11.2).
	changed := bytes.Clone(signed)
	changed[len(changed)-3] ^= 1
	var ve *VerifyError
	if _, err := Verify(der, changed, nil); !errors.As(err, &ve) || ve.Reason != BadDigest || ve.Signer == nil {
		t.Errorf("Verify(changed) = %v, want BadDigest with the signer", err)
	}
	// The signer's certificate removed from the message and not supplied: NoSignerCertificate; supplied
	// through VerifyOptions.Certificates it verifies again.
	s, _ := Verify(der, signed, nil)
	i := bytes.Index(der, s.Signer.Raw)
	stripped := bytes.Clone(der)
	stripped[i] = 0xa1 // same length, tagged [1] IMPLICIT: an (obsolete) extended certificate, ignored
	if _, err := Verify(stripped, signed, nil); !errors.As(err, &ve) || ve.Reason != NoSignerCertificate {
		t.Errorf("Verify(no certificate) = %v, want NoSignerCertificate", err)
	}
	if s, err := Verify(stripped, signed, &VerifyOptions{Certificates: []*x509.Certificate{s.Signer}}); err != nil || s.SignerFromMessage {
		t.Errorf("Verify(certificate from options) = %v, want success not from the message", err)
	}
}

// TestVerifyNotSigned: enveloped data is ErrNotSigned, garbage is ErrMalformed, neither a VerifyError.
func TestVerifyNotSigned(t *testing.T) {
	env := readFile(t, filepath.Join(fixturesDir, "rsa-v15-aes128-cbc.der"))
	if _, err := Verify(env, nil, nil); !errors.Is(err, ErrNotSigned) {
		t.Errorf("Verify(enveloped) = %v, want ErrNotSigned", err)
	}
	if _, err := Verify([]byte{0x30, 0x03, 0x02, 0x01}, nil, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("Verify(garbage) = %v, want ErrMalformed", err)
	}
}

// FuzzVerify: Verify never panics and fails only with this package's sentinels or a *VerifyError.
func FuzzVerify(f *testing.F) {
	for _, name := range []string{"alice.sig.SHA256.opaque.eml", "alice.sig.SHA1.opaque.eml", "alice.dsig.SHA256.multipart.eml"} {
		der, detached := tbSignature(f, name)
		f.Add(der, detached)
	}
	f.Fuzz(func(t *testing.T, in, detached []byte) {
		if len(detached) == 0 {
			detached = nil
		}
		s, err := Verify(in, detached, nil)
		if err == nil {
			if s == nil || s.Signer == nil || s.Content == nil {
				t.Fatal("Verify() succeeded without signer or content")
			}
			return
		}
		var ve *VerifyError
		if !errors.As(err, &ve) && !isSentinel(err) {
			t.Fatalf("Verify() = %v: not a package error", err)
		}
	})
}
