package smime_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// The verification corpus: certificates made here with crypto/x509, messages signed with `openssl cms -sign`
// (and, for Ed25519, which OpenSSL 3.0 cannot sign in CMS, with goSign below), every message checked with
// `openssl cms -verify -purpose smimesign` against the same trust anchors as smime.Verify.

const (
	aliceAddr = "alice@example.org"
	bobAddr   = "bob@example.org"
)

type vIdentity struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM string // file paths
	keyPEM  string
}

// vPKI is the test PKI: a trusted CA, an unknown CA and the signers of the corpus.
type vPKI struct {
	dir     string
	ca      *vIdentity
	ids     map[string]*vIdentity
	pool    *x509.CertPool
	content string // path of the MIME entity that is signed
}

func vSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n.Add(n, big.NewInt(1))
}

type certSpec struct {
	name      string
	key       string // rsa, pss (rsa), p256, p384, p521, ed25519
	issuer    string // "ca", "unknown", "self"
	email     string
	subjEmail bool // legacy emailAddress in the subject instead of a SAN
	notBefore time.Time
	notAfter  time.Time
	eku       []x509.ExtKeyUsage
	serialOf  string // reuse another identity's serial number (an impostor)
}

func newKey(kind string) (crypto.Signer, error) {
	switch kind {
	case "rsa":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p521":
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	panic("unknown key kind " + kind)
}

func (p *vPKI) write(name string, id *vIdentity) error {
	id.certPEM = filepath.Join(p.dir, name+".pem")
	id.keyPEM = filepath.Join(p.dir, name+".key")
	der, err := x509.MarshalPKCS8PrivateKey(id.key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(id.certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.cert.Raw}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(id.keyPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func (p *vPKI) issue(s certSpec, parent *vIdentity) (*vIdentity, error) {
	key, err := newKey(s.key)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: vSerial(),
		Subject:      pkix.Name{CommonName: s.name, Organization: []string{"smimeproxy test"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	if !s.notBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = s.notBefore, s.notAfter
	}
	if s.eku != nil {
		tmpl.ExtKeyUsage = s.eku
	}
	ski := make([]byte, 20)
	rand.Read(ski)
	tmpl.SubjectKeyId = ski
	if s.serialOf != "" {
		tmpl.SerialNumber = p.ids[s.serialOf].cert.SerialNumber
	}
	if s.subjEmail {
		tmpl.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: s.email}}
	} else if s.email != "" {
		tmpl.EmailAddresses = []string{s.email}
	}
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	if parent == nil && s.issuer != "self" { // a CA
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.ExtKeyUsage = nil
		tmpl.NotAfter = now.Add(48 * time.Hour)
		tmpl.NotBefore = now.Add(-48 * time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	id := &vIdentity{cert: cert, key: key}
	return id, p.write(s.name, id)
}

func vSetup(t testing.TB) *vPKI {
	t.Helper()
	testenv.LookPath(t, "openssl")
	p, err := buildPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func buildPKI(dir string) (*vPKI, error) {
	var err error
	p := &vPKI{dir: dir, ids: map[string]*vIdentity{}}
	if p.ca, err = p.issue(certSpec{name: "ca", key: "p256"}, nil); err != nil {
		return nil, err
	}
	unknown, err := p.issue(certSpec{name: "unknown-ca", key: "p256"}, nil)
	if err != nil {
		return nil, err
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca.cert)
	now := time.Now()
	specs := []struct {
		s      certSpec
		parent *vIdentity
	}{
		{certSpec{name: "alice-rsa", key: "rsa", email: aliceAddr}, p.ca},
		{certSpec{name: "alice-p256", key: "p256", email: aliceAddr}, p.ca},
		{certSpec{name: "alice-p384", key: "p384", email: aliceAddr}, p.ca},
		{certSpec{name: "alice-p521", key: "p521", email: aliceAddr}, p.ca},
		{certSpec{name: "alice-ed25519", key: "ed25519", email: aliceAddr}, p.ca},
		{certSpec{name: "alice-legacy", key: "p256", email: aliceAddr, subjEmail: true}, p.ca},
		{certSpec{name: "alice-expired", key: "p256", email: aliceAddr, notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-24 * time.Hour)}, p.ca},
		{certSpec{name: "alice-future", key: "p256", email: aliceAddr, notBefore: now.Add(24 * time.Hour), notAfter: now.Add(47 * time.Hour)}, p.ca},
		{certSpec{name: "alice-unknown", key: "p256", email: aliceAddr}, unknown},
		{certSpec{name: "alice-tls", key: "p256", email: aliceAddr, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, p.ca},
		{certSpec{name: "alice-self", key: "p256", email: aliceAddr, issuer: "self"}, nil},
		{certSpec{name: "bob", key: "rsa", email: bobAddr}, p.ca},
		{certSpec{name: "eve", key: "p256", email: "eve@example.org"}, p.ca},
	}
	for _, s := range specs {
		id, err := p.issue(s.s, s.parent)
		if err != nil {
			return nil, err
		}
		p.ids[s.s.name] = id
	}
	// An impostor: same issuer and serial number as alice-rsa, another key.
	imp, err := p.issue(certSpec{name: "alice-impostor", key: "rsa", email: aliceAddr, serialOf: "alice-rsa"}, p.ca)
	if err != nil {
		return nil, err
	}
	p.ids["alice-impostor"] = imp
	p.content = filepath.Join(dir, "content.txt")
	entity := "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob,\r\nthe signed body with a MARKER.\r\n"
	return p, os.WriteFile(p.content, []byte(entity), 0o600)
}

func (p *vPKI) sign(t testing.TB, signer string, args ...string) []byte {
	t.Helper()
	id := p.ids[signer]
	a := append([]string{"cms", "-sign", "-in", p.content, "-signer", id.certPEM, "-inkey", id.keyPEM,
		"-from", aliceAddr, "-to", bobAddr, "-subject", "signed"}, args...)
	return vRun(t, nil, "openssl", a...)
}

func vRun(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(testenv.LookPath(t, name), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// opensslVerify reports whether `openssl cms -verify` accepts msg with the CA (or the given anchors) trusted.
func (p *vPKI) opensslVerify(t testing.TB, msg []byte, extra ...string) (bool, string) {
	t.Helper()
	f := filepath.Join(p.dir, "verify-in.eml")
	if err := os.WriteFile(f, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"cms", "-verify", "-in", f, "-purpose", "smimesign", "-out", "/dev/null"}, extra...)
	if !containsArg(extra, "-CAfile") {
		args = append(args, "-CAfile", p.ca.certPEM)
	}
	out, err := exec.Command(testenv.LookPath(t, "openssl"), args...).CombinedOutput()
	return err == nil, firstLine(string(out))
}

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "error") || strings.Contains(l, "Verification") {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(s)
}

// mapDER decodes the longest run of base64 lines in msg (the CMS object), applies fn and puts it back.
func mapDER(t testing.TB, msg []byte, fn func([]byte) []byte) []byte {
	t.Helper()
	lines := strings.SplitAfter(string(msg), "\n")
	isB64 := func(l string) bool {
		l = strings.TrimRight(l, "\r\n")
		if len(l) < 16 {
			return false
		}
		for _, c := range l {
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
				return false
			}
		}
		return true
	}
	bestStart, bestLen := -1, 0
	for i := 0; i < len(lines); {
		if !isB64(lines[i]) {
			i++
			continue
		}
		j := i
		for j < len(lines) && isB64(lines[j]) {
			j++
		}
		if j-i > bestLen {
			bestStart, bestLen = i, j-i
		}
		i = j
	}
	if bestStart < 0 {
		t.Fatal("no base64 block")
	}
	eol := "\n"
	if strings.HasSuffix(lines[bestStart], "\r\n") {
		eol = "\r\n"
	}
	var enc strings.Builder
	for _, l := range lines[bestStart : bestStart+bestLen] {
		enc.WriteString(strings.TrimRight(l, "\r\n"))
	}
	der, err := base64.StdEncoding.DecodeString(enc.String())
	if err != nil {
		t.Fatal(err)
	}
	s := base64.StdEncoding.EncodeToString(fn(der))
	var out strings.Builder
	for _, l := range lines[:bestStart] {
		out.WriteString(l)
	}
	for len(s) > 64 {
		out.WriteString(s[:64] + eol)
		s = s[64:]
	}
	out.WriteString(s + eol)
	for _, l := range lines[bestStart+bestLen:] {
		out.WriteString(l)
	}
	return []byte(out.String())
}

// signingTimeOID is the DER of id-signingTime (RFC 5652 section 11.3).
var signingTimeOID = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05}

// tamperSigningTime changes one digit of the signingTime signed attribute (same length, still DER).
func tamperSigningTime(t testing.TB) func([]byte) []byte {
	return func(der []byte) []byte {
		i := bytes.Index(der, signingTimeOID)
		if i < 0 {
			t.Fatal("no signing time attribute")
		}
		// OID, SET (31 len), UTCTime (17 0d) "YYMMDDhhmmssZ": change the seconds' tens digit.
		p := i + len(signingTimeOID) + 2 + 2 + 10
		der = bytes.Clone(der)
		if der[p] == '0' {
			der[p] = '1'
		} else {
			der[p] = '0'
		}
		return der
	}
}

func replaceMarker(b []byte) []byte {
	if !bytes.Contains(b, []byte("MARKER")) {
		panic("no marker")
	}
	return bytes.Replace(b, []byte("MARKER"), []byte("MARKEX"), 1)
}

// goSign builds a SignedData ContentInfo (RFC 5652 section 5) with signed attributes contentType,
// messageDigest and signingTime, for the algorithms OpenSSL 3.0 cannot sign in CMS (Ed25519, RFC 8419).
func goSign(t testing.TB, content []byte, detached bool, id *vIdentity, h crypto.Hash) []byte {
	t.Helper()
	digestOID := map[crypto.Hash]asn1.ObjectIdentifier{
		crypto.SHA256: {2, 16, 840, 1, 101, 3, 4, 2, 1},
		crypto.SHA512: {2, 16, 840, 1, 101, 3, 4, 2, 3},
	}[h]
	hh := h.New()
	hh.Write(content)
	md := hh.Sum(nil)
	attr := func(oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			b.AddASN1(cbasn1.SET, value)
		})
		return b.BytesOrPanic()
	}
	attrs := [][]byte{
		attr(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(cms.OIDData) }),
		attr(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}, func(b *cryptobyte.Builder) { b.AddASN1OctetString(md) }),
		attr(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}, func(b *cryptobyte.Builder) { b.AddASN1UTCTime(time.Now().UTC().Truncate(time.Second)) }),
	}
	sort.Slice(attrs, func(i, j int) bool { return bytes.Compare(attrs[i], attrs[j]) < 0 }) // DER SET OF order
	var sb cryptobyte.Builder
	sb.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
		for _, a := range attrs {
			b.AddBytes(a)
		}
	})
	signedAttrs := sb.BytesOrPanic()
	var sig []byte
	var err error
	var sigAlg asn1.ObjectIdentifier
	switch k := id.key.(type) {
	case ed25519.PrivateKey:
		sig, err = k.Sign(rand.Reader, signedAttrs, crypto.Hash(0))
		sigAlg = asn1.ObjectIdentifier{1, 3, 101, 112}
	default:
		d := h.New()
		d.Write(signedAttrs)
		sig, err = k.Sign(rand.Reader, d.Sum(nil), h)
		sigAlg = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	}
	if err != nil {
		t.Fatal(err)
	}
	algID := func(b *cryptobyte.Builder, oid asn1.ObjectIdentifier) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) })
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(cms.OIDSignedData)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(1)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { algID(b, digestOID) })
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(cms.OIDData)
					if !detached {
						b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
							b.AddASN1OctetString(content)
						})
					}
				})
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(id.cert.Raw) })
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1Int64(1)
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddBytes(id.cert.RawIssuer)
							b.AddASN1BigInt(id.cert.SerialNumber)
						})
						algID(b, digestOID)
						attrsImplicit := bytes.Clone(signedAttrs)
						attrsImplicit[0] = 0xa0 // [0] IMPLICIT
						b.AddBytes(attrsImplicit)
						algID(b, sigAlg)
						b.AddASN1OctetString(sig)
					})
				})
			})
		})
	})
	return out.BytesOrPanic()
}

// goMessage wraps a goSign result as an S/MIME message, detached (multipart/signed) or opaque.
func goMessage(t testing.TB, p *vPKI, id *vIdentity, h crypto.Hash, detached bool) []byte {
	t.Helper()
	entity, err := os.ReadFile(p.content)
	if err != nil {
		t.Fatal(err)
	}
	hdr := "From: " + aliceAddr + "\r\nTo: " + bobAddr + "\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
	der := goSign(t, entity, detached, id, h)
	if !detached {
		return []byte(hdr + "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + wrap64(der))
	}
	return []byte(hdr + "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-512; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\n" + string(entity) + "\r\n--b1\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + wrap64(der) + "\r\n--b1--\r\n")
}

func wrap64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 64 {
		out.WriteString(s[:64] + "\r\n")
		s = s[64:]
	}
	out.WriteString(s + "\r\n")
	return out.String()
}

type vRing []smime.Key

func (r vRing) KeysFor(context.Context, []cms.RecipientID) ([]smime.Key, error) { return r, nil }

// TestVerifyCorpus: smime.Verify agrees with `openssl cms -verify -purpose smimesign` on every case (both
// valid or both invalid) except the documented, deliberate differences, and gives the expected reason.
func TestVerifyCorpus(t *testing.T) {
	p := vSetup(t)
	alice := p.ids["alice-rsa"]
	bob := p.ids["bob"]
	encrypt := func(t testing.TB, entity []byte) []byte {
		return vRun(t, entity, "openssl", "cms", "-encrypt", "-aes256", "-from", aliceAddr, "-to", bobAddr,
			"-subject", "encrypted", bob.certPEM)
	}
	type tc struct {
		name    string
		msg     func(t testing.TB) []byte
		want    string // "valid" or a smime.Sig* reason
		trust   string // for valid: expected trust
		trusted []*x509.Certificate
		ossl    []string // extra openssl -verify arguments (same anchors)
		// openssl is openssl's expected verdict; when it differs from ours, why says why. opensslAny: openssl
		// may go either way (a version-dependent limitation).
		openssl    bool
		opensslAny bool
		why        string
		// decrypt: the message is encrypted to Bob; verify the decrypted entity (openssl: decrypt then verify).
		decrypt bool
	}
	signed := func(signer string, args ...string) func(t testing.TB) []byte {
		return func(t testing.TB) []byte { return p.sign(t, signer, args...) }
	}
	cases := []tc{
		{name: "rsa-v15-sha256-detached", msg: signed("alice-rsa", "-md", "sha256"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "rsa-v15-sha256-opaque", msg: signed("alice-rsa", "-md", "sha256", "-nodetach"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "rsa-v15-sha384-opaque", msg: signed("alice-rsa", "-md", "sha384", "-nodetach"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "rsa-v15-sha512-detached", msg: signed("alice-rsa", "-md", "sha512"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "rsa-v15-sha1-detached", msg: signed("alice-rsa", "-md", "sha1"), want: smime.SigWeak, openssl: true, why: "SHA-1 is reported weak"},
		{name: "rsa-v15-sha1-opaque", msg: signed("alice-rsa", "-md", "sha1", "-nodetach"), want: smime.SigWeak, openssl: true, why: "SHA-1 is reported weak"},
		{name: "rsa-pss-sha256-detached", msg: signed("alice-rsa", "-md", "sha256", "-keyopt", "rsa_padding_mode:pss"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "rsa-pss-sha512-opaque", msg: signed("alice-rsa", "-md", "sha512", "-nodetach", "-keyopt", "rsa_padding_mode:pss"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "rsa-no-signed-attributes", msg: signed("alice-rsa", "-md", "sha256", "-noattr"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "rsa-signer-by-ski", msg: signed("alice-rsa", "-md", "sha256", "-keyid", "-nodetach"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "ecdsa-p256-sha256-detached", msg: signed("alice-p256", "-md", "sha256"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "ecdsa-p384-sha384-opaque", msg: signed("alice-p384", "-md", "sha384", "-nodetach"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "ecdsa-p521-sha512-detached", msg: signed("alice-p521", "-md", "sha512"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "ecdsa-p256-sha1-opaque", msg: signed("alice-p256", "-md", "sha1", "-nodetach"), want: smime.SigWeak, openssl: true, why: "SHA-1 is reported weak"},
		{name: "ed25519-detached", msg: func(t testing.TB) []byte { return goMessage(t, p, p.ids["alice-ed25519"], crypto.SHA512, true) },
			want: "valid", trust: smime.TrustChain, opensslAny: true, why: "OpenSSL 3.0 cannot verify Ed25519 CMS signatures (invalid digest)"},
		{name: "ed25519-opaque", msg: func(t testing.TB) []byte { return goMessage(t, p, p.ids["alice-ed25519"], crypto.SHA512, false) },
			want: "valid", trust: smime.TrustChain, opensslAny: true, why: "OpenSSL 3.0 cannot verify Ed25519 CMS signatures (invalid digest)"},
		{name: "go-rsa-sha256-opaque", msg: func(t testing.TB) []byte { return goMessage(t, p, alice, crypto.SHA256, false) }, want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "legacy-subject-email", msg: signed("alice-legacy", "-md", "sha256"), want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "x-pkcs7-signature-lf-line-ends", msg: func(t testing.TB) []byte {
			m := p.sign(t, "alice-rsa", "-md", "sha256")
			m = bytes.ReplaceAll(m, []byte("\r\n"), []byte("\n"))
			return bytes.Replace(m, []byte("application/pkcs7-signature"), []byte("application/x-pkcs7-signature"), 1)
		}, want: "valid", trust: smime.TrustChain, openssl: true},
		{name: "tampered-body-detached", msg: func(t testing.TB) []byte { return replaceMarker(p.sign(t, "alice-rsa", "-md", "sha256")) }, want: smime.SigBadDigest},
		{name: "tampered-body-opaque", msg: func(t testing.TB) []byte {
			return mapDER(t, p.sign(t, "alice-p256", "-md", "sha256", "-nodetach"), replaceMarker)
		}, want: smime.SigBadDigest},
		{name: "tampered-body-no-attributes", msg: func(t testing.TB) []byte { return replaceMarker(p.sign(t, "alice-rsa", "-md", "sha256", "-noattr")) }, want: smime.SigBadSignature},
		{name: "tampered-signed-attributes-detached", msg: func(t testing.TB) []byte {
			return mapDER(t, p.sign(t, "alice-rsa", "-md", "sha256"), tamperSigningTime(t))
		}, want: smime.SigBadSignature},
		{name: "tampered-signed-attributes-opaque-ecdsa", msg: func(t testing.TB) []byte {
			return mapDER(t, p.sign(t, "alice-p384", "-md", "sha384", "-nodetach"), tamperSigningTime(t))
		}, want: smime.SigBadSignature},
		{name: "wrong-signer-cert-impostor", msg: signed("alice-rsa", "-md", "sha256", "-nocerts"), want: smime.SigBadSignature,
			trusted: []*x509.Certificate{p.ids["alice-impostor"].cert}, ossl: []string{"-certfile", p.ids["alice-impostor"].certPEM}},
		{name: "wrong-signer-cert-missing", msg: signed("alice-rsa", "-md", "sha256", "-nocerts"), want: smime.SigNoCertificate,
			trusted: []*x509.Certificate{p.ids["eve"].cert}, ossl: []string{"-certfile", p.ids["eve"].certPEM}},
		{name: "expired", msg: signed("alice-expired", "-md", "sha256"), want: smime.SigExpired},
		{name: "not-yet-valid", msg: signed("alice-future", "-md", "sha256"), want: smime.SigNotYetValid},
		{name: "unknown-ca", msg: signed("alice-unknown", "-md", "sha256", "-nodetach"), want: smime.SigUntrusted},
		{name: "eku-server-auth-only", msg: signed("alice-tls", "-md", "sha256"), want: smime.SigUntrusted},
		{name: "address-mismatch", msg: signed("bob", "-md", "sha256"), want: smime.SigAddressMismatch, openssl: true,
			why: "openssl does not compare the From address with the certificate"},
		{name: "cert-only-in-address-book", msg: signed("alice-rsa", "-md", "sha256", "-nocerts"), want: "valid", trust: smime.TrustChain,
			trusted: []*x509.Certificate{alice.cert}, ossl: []string{"-certfile", alice.certPEM}, openssl: true},
		{name: "self-signed-in-address-book", msg: signed("alice-self", "-md", "sha256"), want: "valid", trust: smime.TrustAddressBook,
			trusted: []*x509.Certificate{p.ids["alice-self"].cert}, ossl: []string{"-CAfile", p.ids["alice-self"].certPEM}, openssl: true},
		{name: "self-signed-not-trusted", msg: signed("alice-self", "-md", "sha256"), want: smime.SigUntrusted},
		{name: "signed-then-encrypted", msg: func(t testing.TB) []byte { return encrypt(t, p.sign(t, "alice-rsa", "-md", "sha256")) },
			want: "valid", trust: smime.TrustChain, openssl: true, decrypt: true},
		{name: "signed-opaque-then-encrypted-tampered-inside", msg: func(t testing.TB) []byte {
			return encrypt(t, mapDER(t, p.sign(t, "alice-p256", "-md", "sha256", "-nodetach"), replaceMarker))
		}, want: smime.SigBadDigest, decrypt: true},
		{name: "encrypted-then-signed", msg: func(t testing.TB) []byte {
			entity, err := os.ReadFile(p.content)
			if err != nil {
				t.Fatal(err)
			}
			enc := encrypt(t, entity)
			f := filepath.Join(p.dir, "enc.eml")
			if err := os.WriteFile(f, enc, 0o600); err != nil {
				t.Fatal(err)
			}
			return vRun(t, nil, "openssl", "cms", "-sign", "-in", f, "-signer", alice.certPEM, "-inkey", alice.keyPEM,
				"-from", aliceAddr, "-to", bobAddr, "-subject", "encrypted then signed", "-md", "sha256")
		}, want: "valid", trust: smime.TrustChain, openssl: true},
	}
	agree := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := c.msg(t)
			toVerify := msg
			osslIn := msg
			if c.decrypt {
				res := smime.Process(context.Background(), msg, vRing{{Cert: bob.cert, Private: bob.key}}, nil)
				if res.Status != smime.Decrypted {
					t.Fatalf("Process() = %v %q, want Decrypted", res.Status, res.Reason)
				}
				toVerify = res.Served
				osslIn = vRun(t, msg, "openssl", "cms", "-decrypt", "-inkey", bob.keyPEM, "-recip", bob.certPEM)
			}
			sig := smime.Verify(toVerify, &smime.VerifyOptions{Roots: p.pool, Trusted: c.trusted})
			if sig == nil {
				t.Fatal("Verify() = nil, want a signature")
			}
			got := sig.Reason
			if sig.Valid {
				got = "valid"
			}
			if got != c.want {
				t.Fatalf("Verify() = %s (%s), want %s", sig.HeaderValue(), sig.Detail, c.want)
			}
			if sig.Valid {
				if sig.Trust != c.trust || sig.Signer != aliceAddr || sig.Fingerprint != hexSHA256(sig.Cert.Raw) {
					t.Errorf("Verify() = %s, want trust=%s signer=%s", sig.HeaderValue(), c.trust, aliceAddr)
				}
				// OpenSSL sends SMIMECapabilities (RFC 8551 section 2.5.2) unless -noattr/-nosmimecap.
				if c.name == "rsa-v15-sha256-detached" && (len(sig.Signed.Capabilities) == 0 || sig.Signed.SigningTime.IsZero()) {
					t.Errorf("Signed = %+v, want SMIMECapabilities and a signing time", sig.Signed)
				}
				if !strings.HasPrefix(sig.HeaderValue(), "valid; signer="+aliceAddr+"; cert=sha256:") {
					t.Errorf("HeaderValue() = %q", sig.HeaderValue())
				}
			} else if sig.HeaderValue() != "invalid; reason="+c.want {
				t.Errorf("HeaderValue() = %q, want invalid; reason=%s", sig.HeaderValue(), c.want)
			}
			ok, out := p.opensslVerify(t, osslIn, c.ossl...)
			if ok != c.openssl && !c.opensslAny {
				t.Fatalf("openssl cms -verify = %v (%s), want %v", ok, out, c.openssl)
			}
			if ok != sig.Valid && c.why == "" {
				t.Fatalf("disagreement: openssl %v (%s), Verify %s", ok, out, sig.HeaderValue())
			}
			if ok == sig.Valid {
				agree++
			}
		})
	}
	if len(cases) < 30 {
		t.Errorf("corpus has %d cases, want at least 30", len(cases))
	}
	t.Logf("%d cases, %d agree with openssl, the rest differ deliberately", len(cases), agree)
}

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	const hexd = "0123456789abcdef"
	out := make([]byte, 64)
	for i, c := range s {
		out[2*i], out[2*i+1] = hexd[c>>4], hexd[c&15]
	}
	return string(out)
}

// TestVerifyThunderbird verifies every signed message of the NSS/Thunderbird corpus, the encrypted ones after
// decryption with Bob's key (Process), and compares with `openssl cms -verify -purpose smimesign` (on the
// output of `openssl cms -decrypt` for encrypted ones) with the corpus's TestCA as the only anchor.
func TestVerifyThunderbird(t *testing.T) {
	openssl := testenv.LookPath(t, "openssl")
	files, err := filepath.Glob(filepath.Join(corpus, "*.eml"))
	if err != nil || len(files) < 60 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	caPEM := filepath.Join(corpus, "TestCA.pem")
	block, _ := pem.Decode(mustRead(t, caPEM))
	if block == nil {
		t.Fatal("TestCA.pem: no PEM block")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	key := bob(t)
	keyPEM := bobPEM(t)
	var valid, invalid int
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			msg := mustRead(t, f)
			toVerify, osslIn := msg, f
			topEncrypted := strings.HasSuffix(name, ".env.eml") || name == "alice.env.eml"
			if topEncrypted {
				res := smime.Process(context.Background(), msg, vRing{key}, nil)
				if res.Status != smime.Decrypted {
					t.Fatalf("Process() = %v %q, want Decrypted", res.Status, res.Reason)
				}
				toVerify = res.Served
				osslIn = filepath.Join(t.TempDir(), "decrypted.eml")
				if err := os.WriteFile(osslIn, run(t, msg, "openssl", "cms", "-decrypt", "-inkey", keyPEM), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			sig := smime.Verify(toVerify, &smime.VerifyOptions{Roots: roots})
			if name == "alice.env.eml" {
				if sig != nil {
					t.Fatalf("Verify() = %s, want nil (not signed)", sig.HeaderValue())
				}
				return
			}
			if sig == nil {
				t.Fatal("Verify() = nil, want a signature")
			}
			want := "valid"
			switch {
			case strings.Contains(name, ".bad."), strings.Contains(name, "mismatch-econtent"):
				want = smime.SigBadDigest
			case strings.HasPrefix(name, "alice.env.dsig.") && !strings.Contains(name, "dave"):
				// An enveloped entity under a multipart/signed: NSS's signature does not cover the part as
				// transmitted (openssl agrees).
				want = smime.SigBadDigest
			case strings.Contains(name, "SHA1"):
				want = smime.SigWeak
			}
			got := sig.Reason
			if sig.Valid {
				got = "valid"
				if sig.Trust != smime.TrustChain || (sig.Signer != "alice@example.com" && sig.Signer != "dave@example.com") {
					t.Errorf("Verify() = %s", sig.HeaderValue())
				}
			}
			if got != want {
				t.Fatalf("Verify() = %s (%s), want %s", sig.HeaderValue(), sig.Detail, want)
			}
			out, err := exec.Command(openssl, "cms", "-verify", "-in", osslIn, "-CAfile", caPEM, "-purpose", "smimesign",
				"-out", "/dev/null").CombinedOutput()
			osslOK := err == nil
			if osslOK != (sig.Valid || want == smime.SigWeak) {
				t.Fatalf("openssl cms -verify = %v (%s), Verify() = %s", osslOK, firstLine(string(out)), sig.HeaderValue())
			}
			if sig.Valid {
				valid++
			} else {
				invalid++
			}
		})
	}
	t.Logf("%d valid, %d invalid, all as openssl (SHA-1 reported weak)", valid, invalid)
}

// bench100KB returns a signed 100 KB message (detached, SHA-256) by signer and the options to verify it.
func bench100KB(b *testing.B, p *vPKI, signer string) []byte {
	b.Helper()
	var body strings.Builder
	body.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	for body.Len() < 100<<10 {
		body.WriteString("The quick brown fox jumps over the lazy dog, again and again, for a signed message.\r\n")
	}
	f := filepath.Join(b.TempDir(), "content.txt")
	if err := os.WriteFile(f, []byte(body.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	id := p.ids[signer]
	return vRun(b, nil, "openssl", "cms", "-sign", "-in", f, "-signer", id.certPEM, "-inkey", id.keyPEM, "-md", "sha256",
		"-from", aliceAddr, "-to", bobAddr, "-subject", "bench")
}

// BenchmarkVerify100KB is the whole verification of a signed 100 KB message: MIME parsing, base64 of the
// signature part, CMS parsing, SHA-256 of the content, the signature, and x509 chain validation (one more
// signature: the CA's on the certificate). Compare with BenchmarkVerifyCryptoFloor.
func BenchmarkVerify100KB(b *testing.B) {
	p := vSetup(b)
	for _, signer := range []string{"alice-rsa", "alice-p256"} {
		msg := bench100KB(b, p, signer)
		opts := &smime.VerifyOptions{Roots: p.pool}
		if s := smime.Verify(msg, opts); s == nil || !s.Valid {
			b.Fatalf("benchmark message does not verify")
		}
		b.Run(strings.TrimPrefix(signer, "alice-"), func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if s := smime.Verify(msg, opts); !s.Valid {
					b.Fatal("invalid")
				}
			}
		})
	}
}

// BenchmarkVerifyCryptoFloor is the unavoidable part of BenchmarkVerify100KB: SHA-256 of 100 KB plus one
// signature verification with the signer's key (RSA-2048 PKCS #1 v1.5, or ECDSA P-256), and "+chain" adds the
// second verification chain validation needs (the CA's ECDSA P-256 signature on the certificate).
func BenchmarkVerifyCryptoFloor(b *testing.B) {
	p := vSetup(b)
	content := bytes.Repeat([]byte("x"), 100<<10)
	for _, signer := range []string{"alice-rsa", "alice-p256"} {
		id := p.ids[signer]
		d := sha256.Sum256([]byte("signed attributes"))
		sig, err := id.key.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			b.Fatal(err)
		}
		verify := func() bool {
			switch k := id.cert.PublicKey.(type) {
			case *rsa.PublicKey:
				return rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], sig) == nil
			case *ecdsa.PublicKey:
				return ecdsa.VerifyASN1(k, d[:], sig)
			}
			return false
		}
		for _, chain := range []bool{false, true} {
			name := strings.TrimPrefix(signer, "alice-")
			if chain {
				name += "+chain"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(content)))
				for b.Loop() {
					sum := sha256.Sum256(content)
					if !verify() || sum[0] == 0 && sum[1] == 0 && sum[2] == 0 && sum[3] == 0 {
						b.Fatal("verify")
					}
					if chain && id.cert.CheckSignatureFrom(p.ca.cert) != nil {
						b.Fatal("chain")
					}
				}
			})
		}
	}
}
