package keystore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// certOpts describe a test certificate.
type certOpts struct {
	emails       []string  // subjectAltName rfc822Names
	subjectEmail string    // legacy emailAddress in the subject
	notBefore    time.Time // default: an hour ago
	lifetime     time.Duration
	ca           bool
	parent       *x509.Certificate // nil: self-signed
	parentKey    *ecdsa.PrivateKey
}

// newTestCert makes a P-256 certificate (fast to generate) and returns it with its key.
func newTestCert(t testing.TB, o certOpts) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.lifetime == 0 {
		o.lifetime = 365 * 24 * time.Hour
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	name := pkix.Name{CommonName: "test " + serial.String()}
	if o.subjectEmail != "" {
		name.ExtraNames = []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: o.subjectEmail}}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		EmailAddresses:        o.emails,
		NotBefore:             o.notBefore,
		NotAfter:              o.notBefore.Add(o.lifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		BasicConstraintsValid: true,
		IsCA:                  o.ca,
	}
	if o.ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
	}
	parent, parentKey := tmpl, key
	if o.parent != nil {
		parent, parentKey = o.parent, o.parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func TestNormalizeAddress(t *testing.T) {
	for in, want := range map[string]string{
		"alice@example.com":        "alice@example.com",
		"Alice.Smith@Example.COM":  "alice.smith@example.com",
		"  bob+tag@example.org.  ": "bob+tag@example.org",
		`"a@b"@example.com`:        `"a@b"@example.com`,
		"o/neil@Example.com":       "o/neil@example.com",
		"Jörg@Bücher.example":      "jörg@bücher.example",
	} {
		got, err := NormalizeAddress(in)
		if err != nil || got != want {
			t.Errorf("NormalizeAddress(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "alice", "@example.com", "alice@", "a b@example.com", "<alice@example.com>",
		"a@example..com", "a@.example.com", "a,b@example.com", "a\x00@example.com", "a@" + strings.Repeat("x", 260) + ".com"} {
		if got, err := NormalizeAddress(in); !errors.Is(err, ErrBadAddress) {
			t.Errorf("NormalizeAddress(%q) = %q, %v, want ErrBadAddress", in, got, err)
		}
	}
}

// TestCertAddresses: subjectAltName rfc822Names and the legacy subject emailAddress (RFC 8550 section 3), case
// folded, without duplicates.
func TestCertAddresses(t *testing.T) {
	c, _ := newTestCert(t, certOpts{emails: []string{"Alice@Example.com", "alice@example.com", "a2@example.com"}, subjectEmail: "ALICE@example.com"})
	if got, want := CertAddresses(c), []string{"alice@example.com", "a2@example.com"}; !slices.Equal(got, want) {
		t.Errorf("CertAddresses = %q, want %q", got, want)
	}
	legacy, _ := newTestCert(t, certOpts{subjectEmail: "Old@Example.com"})
	if got := CertAddresses(legacy); !slices.Equal(got, []string{"old@example.com"}) {
		t.Errorf("CertAddresses(legacy emailAddress) = %q", got)
	}
	none, _ := newTestCert(t, certOpts{})
	if got := CertAddresses(none); len(got) != 0 {
		t.Errorf("CertAddresses(no email) = %q, want none", got)
	}
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// TestParseCertificates: PEM, DER, and PKCS #7 certs-only bundles (RFC 8551 section 3.2.2) as openssl
// crl2pkcs7 writes them in DER and PEM, plus a BER (indefinite-length) form of the same bundle.
func TestParseCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newTestCert(t, certOpts{ca: true})
	leaf, _ := newTestCert(t, certOpts{emails: []string{"bob@example.com"}, parent: ca, parentKey: caKey})
	both := append(pemCert(leaf), pemCert(ca)...)
	bothFile := filepath.Join(dir, "both.pem")
	if err := os.WriteFile(bothFile, both, 0o600); err != nil {
		t.Fatal(err)
	}
	p7bDER := openssl(t, nil, "crl2pkcs7", "-nocrl", "-certfile", bothFile, "-outform", "DER")
	p7bPEM := openssl(t, nil, "crl2pkcs7", "-nocrl", "-certfile", bothFile)
	ber := indefinite(t, p7bDER)

	for _, c := range []struct {
		name string
		data []byte
		want []*x509.Certificate
	}{
		{"pem", both, []*x509.Certificate{leaf, ca}},
		{"pem with text around", append(append([]byte("Bag Attributes\nsubject=...\n"), pemCert(leaf)...), "trailer\n"...), []*x509.Certificate{leaf}},
		{"der", leaf.Raw, []*x509.Certificate{leaf}},
		{"p7b der", p7bDER, []*x509.Certificate{leaf, ca}},
		{"p7b pem", p7bPEM, []*x509.Certificate{leaf, ca}},
		{"p7b ber", ber, []*x509.Certificate{leaf, ca}},
	} {
		got, err := ParseCertificates(c.data)
		if err != nil {
			t.Errorf("%s: ParseCertificates = %v", c.name, err)
			continue
		}
		// openssl may reorder a bundle's certificates; compare as sets.
		if len(got) != len(c.want) {
			t.Errorf("%s: %d certificates, want %d", c.name, len(got), len(c.want))
			continue
		}
		for _, w := range c.want {
			if !slices.ContainsFunc(got, w.Equal) {
				t.Errorf("%s: certificate %s missing", c.name, w.Subject)
			}
		}
	}

	emptyP7 := openssl(t, nil, "crl2pkcs7", "-nocrl", "-outform", "DER")
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0}})
	for name, data := range map[string][]byte{
		"empty": nil, "text": []byte("hello"), "key only": keyPEM, "p7 without certificates": emptyP7,
		"truncated der": leaf.Raw[:len(leaf.Raw)-10], "truncated p7b": p7bDER[:len(p7bDER)/2],
		"enveloped-data oid": {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0xa0, 0x00},
	} {
		if got, err := ParseCertificates(data); !errors.Is(err, ErrCertFile) {
			t.Errorf("%s: ParseCertificates = %d certs, %v, want ErrCertFile", name, len(got), err)
		}
	}
}

// indefinite rewrites the outer SEQUENCE of a DER element to an indefinite length (X.690 section 8.1.3.6).
func indefinite(t *testing.T, der []byte) []byte {
	t.Helper()
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(der, &raw); err != nil {
		t.Fatal(err)
	}
	out := append([]byte{der[0], 0x80}, raw.Bytes...)
	return append(out, 0, 0)
}

func TestMemoryBookRules(t *testing.T) {
	ctx := context.Background()
	b := NewMemoryBook()
	now := time.Now()
	old, _ := newTestCert(t, certOpts{emails: []string{"bob@example.com"}, notBefore: now.Add(-48 * time.Hour)})
	newer, _ := newTestCert(t, certOpts{emails: []string{"Bob@example.com"}, notBefore: now.Add(-time.Hour)})

	// Newest valid preferred.
	if _, err := b.Add(ctx, "alice", old, AddOptions{Source: SourceHarvest}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Add(ctx, "alice", newer, AddOptions{Source: SourceHarvest}); err != nil {
		t.Fatal(err)
	}
	cs, _ := b.Certificates(ctx, "alice", "BOB@example.com")
	if len(cs) != 2 || cs[0].Fingerprint != Fingerprint(newer) {
		t.Fatalf("Certificates = %d, first %v; want 2, the newer first", len(cs), cs)
	}

	// A trusted certificate is preferred over a newer untrusted one, and a harvest does not lower its trust.
	if _, err := b.SetTrust(ctx, "alice", "bob@example.com", Fingerprint(old), TrustUser); err != nil {
		t.Fatal(err)
	}
	got, err := b.Add(ctx, "alice", old, AddOptions{Source: SourceHarvest, Trust: TrustNone, Capabilities: []byte{0x30, 0}})
	if err != nil || got[0].Trust != TrustUser || string(got[0].Capabilities) != "\x30\x00" {
		t.Fatalf("re-harvest of a trusted certificate = %+v, %v; want trust user, capabilities updated", got, err)
	}
	cs, _ = b.Certificates(ctx, "alice", "bob@example.com")
	if cs[0].Fingerprint != Fingerprint(old) || cs[0].Trust != TrustUser {
		t.Errorf("preferred = %s (%s), want the user-trusted older certificate", cs[0].Fingerprint[:8], cs[0].Trust)
	}

	// Per-user separation.
	if cs, _ := b.Certificates(ctx, "carol", "bob@example.com"); len(cs) != 0 {
		t.Errorf("carol sees %d of alice's certificates", len(cs))
	}
	if err := b.Remove(ctx, "carol", "bob@example.com", Fingerprint(old)); !errors.Is(err, ErrContactNotFound) {
		t.Errorf("carol removes alice's certificate: %v, want ErrContactNotFound", err)
	}

	noMail, _ := newTestCert(t, certOpts{})
	if _, err := b.Add(ctx, "alice", noMail, AddOptions{}); !errors.Is(err, ErrNoAddress) {
		t.Errorf("Add(no email) = %v, want ErrNoAddress", err)
	}
	if _, err := b.SetTrust(ctx, "alice", "bob@example.com", Fingerprint(old), "yes"); !errors.Is(err, ErrBadTrust) {
		t.Errorf("SetTrust(yes) = %v, want ErrBadTrust", err)
	}
}

func TestPlanAdd(t *testing.T) {
	now := time.Now()
	mk := func(nb time.Time, life time.Duration, trust string) Contact {
		c, _ := newTestCert(t, certOpts{emails: []string{"bob@example.com"}, notBefore: nb, lifetime: life})
		ct, err := NewContact("bob@example.com", c, AddOptions{Trust: trust, Source: SourceHarvest}, now)
		if err != nil {
			t.Fatal(err)
		}
		return ct
	}
	// Idempotent: the same certificate again is no write.
	a := mk(now.Add(-time.Hour), 0, TrustChain)
	if p, err := PlanAdd([]Contact{a}, a, now); err != nil || p.Write {
		t.Errorf("PlanAdd(same) = %+v, %v; want no write", p, err)
	}
	// Trust is never lowered by Add, and raised by it.
	lower := a
	lower.Trust = TrustNone
	if p, _ := PlanAdd([]Contact{a}, lower, now); p.Write || p.Store.Trust != TrustChain {
		t.Errorf("PlanAdd(lower trust) = trust %s write %v; want chain, no write", p.Store.Trust, p.Write)
	}
	higher := a
	higher.Trust = TrustUser
	if p, _ := PlanAdd([]Contact{a}, higher, now); !p.Write || p.Store.Trust != TrustUser {
		t.Errorf("PlanAdd(higher trust) = trust %s write %v; want user, write", p.Store.Trust, p.Write)
	}

	// A full address: an expired certificate is evicted first, then the oldest untrusted.
	var full []Contact
	expired := mk(now.Add(-3*365*24*time.Hour), 24*time.Hour, TrustUser)
	full = append(full, expired)
	for i := range MaxContactsPerAddress - 1 {
		full = append(full, mk(now.Add(-time.Duration(i+10)*time.Hour), 0, TrustNone))
	}
	fresh := mk(now.Add(-time.Minute), 0, TrustNone)
	p, err := PlanAdd(full, fresh, now)
	if err != nil || !slices.Equal(p.Evict, []string{expired.Fingerprint}) {
		t.Errorf("PlanAdd(full with an expired one) = evict %q, %v; want the expired certificate", p.Evict, err)
	}
	full[0] = mk(now.Add(-time.Minute), 0, TrustChain) // replace the expired one with a trusted one
	oldest := full[MaxContactsPerAddress-1]
	if p, err := PlanAdd(full, fresh, now); err != nil || !slices.Equal(p.Evict, []string{oldest.Fingerprint}) {
		t.Errorf("PlanAdd(full) = evict %q, %v; want the oldest untrusted", p.Evict, err)
	}
	// An untrusted certificate older than all of a full address is not stored.
	ancient := mk(now.Add(-1000*time.Hour), 2000*time.Hour, TrustNone)
	if _, err := PlanAdd(full, ancient, now); !errors.Is(err, ErrBookFull) {
		t.Errorf("PlanAdd(older than a full address) = %v, want ErrBookFull", err)
	}
	// Ten trusted certificates are never displaced by an untrusted newer one.
	var trusted []Contact
	for i := range MaxContactsPerAddress {
		trusted = append(trusted, mk(now.Add(-time.Duration(i+10)*time.Hour), 0, TrustUser))
	}
	if _, err := PlanAdd(trusted, fresh, now); !errors.Is(err, ErrBookFull) {
		t.Errorf("PlanAdd(untrusted into 10 trusted) = %v, want ErrBookFull", err)
	}
}
