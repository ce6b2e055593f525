package cms

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

const thunderbirdDir = "../../testdata/thunderbird"

// extractEnveloped finds the enveloped-data CMS in a MIME entity (test helper; the real MIME policy lives in
// crypto/smime): an application/pkcs7-mime body is base64-decoded; opaque signed-data is unwrapped with
// SignedContent and searched again; multipart/signed is searched in its first part.
func extractEnveloped(t *testing.T, entity []byte, depth int) []byte {
	t.Helper()
	if depth > 4 {
		t.Fatal("extractEnveloped: too deep")
	}
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(entity)))
	hdr, err := r.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("mime header: %v", err)
	}
	body, err := io.ReadAll(r.R)
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(hdr.Get("Content-Type"))
	if err != nil {
		t.Fatalf("content-type: %v", err)
	}
	switch mt {
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		if !strings.EqualFold(hdr.Get("Content-Transfer-Encoding"), "base64") {
			t.Fatalf("unexpected transfer encoding %q", hdr.Get("Content-Transfer-Encoding"))
		}
		der, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, bytes.NewReader(body)))
		if err != nil {
			t.Fatalf("base64: %v", err)
		}
		oid, err := ContentType(der)
		if err != nil {
			t.Fatalf("ContentType() = %v", err)
		}
		switch {
		case oid.Equal(OIDEnvelopedData), oid.Equal(OIDAuthEnvelopedData):
			return der
		case oid.Equal(OIDSignedData):
			inner, err := SignedContent(der)
			if err != nil {
				t.Fatalf("SignedContent() = %v", err)
			}
			return extractEnveloped(t, inner, depth+1)
		}
		t.Fatalf("unexpected content type %v", oid)
	case "multipart/signed":
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		p, err := mr.NextRawPart()
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		var part bytes.Buffer
		for k, vs := range p.Header {
			for _, v := range vs {
				part.WriteString(k + ": " + v + "\r\n")
			}
		}
		part.WriteString("\r\n")
		io.Copy(&part, p)
		return extractEnveloped(t, part.Bytes(), depth+1)
	}
	t.Fatalf("no enveloped data in %s", mt)
	return nil
}

// loadP12 reads an NSS PKCS #12 file (password "nss"). NSS writes it in BER throughout (also inside the
// encrypted safe contents), which go-pkcs12 cannot read even after the outer BER to DER rewrite, so the test
// tries go-pkcs12 first and otherwise asks `openssl pkcs12 -nodes` for the PEM key and certificate.
func loadP12(t *testing.T, name string) (any, *x509.Certificate) {
	t.Helper()
	path := filepath.Join(thunderbirdDir, name)
	if der, _, err := toDER(readFile(t, path)); err == nil {
		if key, cert, _, err := pkcs12.DecodeChain(der, "nss"); err == nil {
			return key, cert
		}
	}
	out, err := exec.Command(testenv.LookPath(t, "openssl"), "pkcs12", "-in", path, "-passin", "pass:nss", "-nodes", "-clcerts").Output()
	if err != nil {
		t.Fatalf("openssl pkcs12 %s: %v", name, err)
	}
	var key any
	var cert *x509.Certificate
	for rest := out; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PRIVATE KEY":
			if key, err = x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil {
				t.Fatalf("%s key: %v", name, err)
			}
		case "CERTIFICATE":
			if cert, err = x509.ParseCertificate(blk.Bytes); err != nil {
				t.Fatalf("%s cert: %v", name, err)
			}
		}
	}
	if key == nil || cert == nil {
		t.Fatalf("%s: no key or certificate", name)
	}
	return key, cert
}

// TestThunderbirdCorpus decrypts every NSS-made enveloped message (BER, indefinite lengths, to Bob) and
// compares with `openssl cms -decrypt` of the same CMS.
func TestThunderbirdCorpus(t *testing.T) {
	key, cert := loadP12(t, "Bob.p12")
	openssl := testenv.LookPath(t, "openssl")
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, certFile := filepath.Join(dir, "bob.key"), filepath.Join(dir, "bob.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600)

	files, err := filepath.Glob(filepath.Join(thunderbirdDir, "*env*.eml"))
	if err != nil || len(files) < 20 {
		t.Fatalf("thunderbird corpus: %d files, %v", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			ber := extractEnveloped(t, readFile(t, f), 0)
			cmsFile := filepath.Join(dir, "m.der")
			if err := os.WriteFile(cmsFile, ber, 0o600); err != nil {
				t.Fatal(err)
			}
			want, err := exec.Command(openssl, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", cmsFile,
				"-recip", certFile, "-inkey", keyFile).Output()
			if err != nil {
				t.Fatalf("openssl cms -decrypt: %v", err)
			}
			env, err := Parse(ber)
			if err != nil {
				t.Fatalf("Parse() = %v", err)
			}
			pt, info, err := env.Decrypt(cert, key)
			if err != nil {
				t.Fatalf("Decrypt() = %v", err)
			}
			if !bytes.Equal(pt, want) {
				t.Errorf("Decrypt() differs from openssl (%d vs %d bytes)", len(pt), len(want))
			}
			if info.KeyAlgorithm != "rsa-pkcs1v15" || !strings.HasPrefix(info.ContentCipher, "aes-") {
				t.Errorf("Decrypt() info = %+v", info)
			}
			// Not for Alice: her certificate is no recipient.
			akey, acert := loadP12(t, "Alice.p12")
			env, _ = Parse(ber)
			if _, _, err := env.Decrypt(acert, akey); !errors.Is(err, ErrNoRecipient) {
				t.Errorf("Decrypt(alice) = %v, want ErrNoRecipient", err)
			}
		})
	}
}
