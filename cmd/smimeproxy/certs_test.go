package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// ctCert describes a certificate for the certs tests.
type ctCert struct {
	cn           string
	emails       []string
	subjectEmail string // legacy emailAddress attribute
	notBefore    time.Time
	ca           bool
	parent       *x509.Certificate
	parentKey    *ecdsa.PrivateKey
}

// make creates the certificate (P-256, valid a year from notBefore, default an hour ago) and its key.
func (o ctCert) make(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	name := pkix.Name{CommonName: o.cn}
	if o.subjectEmail != "" {
		name.ExtraNames = []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: o.subjectEmail}}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: name, EmailAddresses: o.emails,
		NotBefore: o.notBefore, NotAfter: o.notBefore.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		BasicConstraintsValid: true, IsCA: o.ca,
	}
	if o.ca {
		tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageCertSign, nil
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

func writePEM(t *testing.T, path string, certs ...*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// p7b writes a certs-only PKCS #7 bundle of certs with openssl crl2pkcs7 (form DER or PEM).
func p7b(t *testing.T, path, form string, certs ...*x509.Certificate) string {
	t.Helper()
	in := writePEM(t, path+".in.pem", certs...)
	out, err := exec.Command(testenv.LookPath(t, "openssl"), "crl2pkcs7", "-nocrl", "-certfile", in, "-outform", form, "-out", path).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl crl2pkcs7: %v: %s", err, out)
	}
	return path
}

// checkColumns fails unless every line of a table starts its columns where the header does.
func checkColumns(t *testing.T, table string, ncol int) []string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	starts := func(l string) []int {
		idx := []int{0}
		for _, m := range regexp.MustCompile(`  +\S`).FindAllStringIndex(l, -1) {
			idx = append(idx, m[1]-1)
		}
		return idx
	}
	head := starts(lines[0])
	if len(head) != ncol {
		t.Fatalf("header %q has %d columns, want %d", lines[0], len(head), ncol)
	}
	for _, l := range lines[1:] {
		got := starts(l)
		if len(got) != ncol {
			t.Errorf("line %q has %d columns, want %d", l, len(got), ncol)
			continue
		}
		for i := range got {
			if got[i] != head[i] {
				t.Errorf("line %q: column %d starts at %d, header at %d", l, i+1, got[i], head[i])
			}
		}
	}
	return lines[1:]
}

// row returns the table line for address and fingerprint, or "".
func row(lines []string, address, fp string) string {
	for _, l := range lines {
		if strings.HasPrefix(l, address+" ") && strings.Contains(l, fp) {
			return l
		}
	}
	return ""
}

// TestCertsImportList: certs import reads PEM, DER, and PKCS #7 bundles in DER and PEM (as openssl
// crl2pkcs7 writes them), takes SAN and legacy subject addresses, marks certificates that verify to --roots
// as chain-trusted, refuses certificates without an address before writing anything; certs list prints an
// aligned table; alice's book is hers only and her key list is unaffected.
func TestCertsImportList(t *testing.T) {
	k := newKeysEnv(t)
	dir := t.TempDir()
	ca, caKey := ctCert{cn: "Example Test CA", ca: true}.make(t)
	bob, _ := ctCert{cn: "Bob", emails: []string{"Bob@Example.com"}, parent: ca, parentKey: caKey}.make(t)
	carol, _ := ctCert{cn: "Carol", emails: []string{"carol@example.com"}}.make(t)
	dave, _ := ctCert{cn: "Dave", emails: []string{"dave@example.com"}}.make(t)
	erin, _ := ctCert{cn: "Erin", subjectEmail: "erin@example.com"}.make(t)
	frank, _ := ctCert{cn: "Frank", emails: []string{"frank@example.com", "f@example.org"}}.make(t)
	anon, _ := ctCert{cn: "No Mail"}.make(t)

	roots := writePEM(t, filepath.Join(dir, "roots.pem"), ca)
	bundle := p7b(t, filepath.Join(dir, "bob.p7b"), "DER", bob, ca)
	carolPEM := writePEM(t, filepath.Join(dir, "carol.pem"), carol)
	daveCER := filepath.Join(dir, "dave.cer")
	os.WriteFile(daveCER, dave.Raw, 0o600)
	erinP7C := p7b(t, filepath.Join(dir, "erin.p7c"), "PEM", erin)
	frankP7B := p7b(t, filepath.Join(dir, "frank.p7b"), "DER", frank)
	anonPEM := writePEM(t, filepath.Join(dir, "anon.pem"), anon)
	caOnly := p7b(t, filepath.Join(dir, "ca.p7b"), "DER", ca)

	// A certificate without an address, or a bundle of CA certificates only, stops the import before Vault.
	_, errs := k.mustRun(exitError, "certs", "import", "--user", "alice", carolPEM, anonPEM)
	if !strings.Contains(errs, "anon.pem") || !strings.Contains(errs, "has no email address") {
		t.Errorf("import of a certificate without an address: stderr %q", errs)
	}
	_, errs = k.mustRun(exitError, "certs", "import", "--user", "alice", caOnly)
	if !strings.Contains(errs, "only CA certificates") {
		t.Errorf("import of a CA-only bundle: stderr %q", errs)
	}
	_, errs = k.mustRun(exitOK, "certs", "list", "--user", "alice")
	if !strings.Contains(errs, "no certificates") {
		t.Errorf("a refused import wrote something: list stderr %q", errs)
	}

	out, _ := k.mustRun(exitOK, "certs", "import", "--user", "alice", "--roots", roots, bundle, carolPEM, daveCER, erinP7C, frankP7B)
	for _, a := range []string{"bob@example.com", "carol@example.com", "dave@example.com", "erin@example.com", "frank@example.com", "f@example.org"} {
		if !strings.Contains(out, "for "+a+":") {
			t.Errorf("import output lacks %s:\n%s", a, out)
		}
	}
	if strings.Contains(out, "Example Test CA, issuer") {
		t.Errorf("the CA certificate of the bundle was imported:\n%s", out)
	}

	out, _ = k.mustRun(exitOK, "certs", "list", "--user", "alice")
	lines := checkColumns(t, out, 6)
	if !strings.HasPrefix(out, "ADDRESS ") || !strings.Contains(strings.SplitN(out, "\n", 2)[0], "ISSUER") {
		t.Errorf("list header: %q", strings.SplitN(out, "\n", 2)[0])
	}
	if len(lines) != 6 {
		t.Fatalf("list has %d rows, want 6:\n%s", len(lines), out)
	}
	for _, c := range []struct {
		addr string
		cert *x509.Certificate
		want []string
	}{
		{"bob@example.com", bob, []string{"Example Test CA", "chain", "import", bob.NotAfter.UTC().Format(time.DateOnly)}},
		{"carol@example.com", carol, []string{"Carol", "none", "import"}},
		{"dave@example.com", dave, []string{"none"}},
		{"erin@example.com", erin, []string{"none"}},
		{"f@example.org", frank, []string{"Frank"}},
		{"frank@example.com", frank, []string{"Frank"}},
	} {
		r := row(lines, c.addr, keystore.Fingerprint(c.cert))
		if r == "" {
			t.Errorf("no row for %s %s:\n%s", c.addr, keystore.Fingerprint(c.cert)[:16], out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r, w) {
				t.Errorf("row %q lacks %q", r, w)
			}
		}
	}
	if !strings.HasPrefix(lines[0], "bob@example.com ") || !strings.HasPrefix(lines[5], "frank@example.com ") {
		t.Errorf("rows not sorted by address:\n%s", out)
	}

	// One address only.
	out, _ = k.mustRun(exitOK, "certs", "list", "--user", "alice", "Carol@Example.com")
	if lines := checkColumns(t, out, 6); len(lines) != 1 || row(lines, "carol@example.com", keystore.Fingerprint(carol)) == "" {
		t.Errorf("list carol:\n%s", out)
	}
	// Re-importing is idempotent.
	k.mustRun(exitOK, "certs", "import", "--user", "alice", carolPEM)
	if out, _ := k.mustRun(exitOK, "certs", "list", "--user", "alice"); strings.Count(out, "carol@example.com") != 1 {
		t.Errorf("carol listed more than once after a re-import:\n%s", out)
	}

	// bob's book is empty; alice's keys are untouched by her book.
	_, errs = k.mustRun(exitOK, "certs", "list", "--user", "bob@example.com")
	if !strings.Contains(errs, "no certificates in the address book of bob@example.com") {
		t.Errorf("bob's list: stderr %q", errs)
	}
	_, errs = k.mustRun(exitOK, "keys", "list", "--user", "alice")
	if !strings.Contains(errs, "no keys for alice") {
		t.Errorf("alice's keys list with a full address book: stderr %q", errs)
	}
}

// TestCertsTrustRemove: the newest certificate of an address is listed first; certs trust (by a fingerprint
// prefix, also as openssl prints it) makes an older one preferred, an untrusted re-import does not undo that;
// certs remove deletes one certificate or, with --all, all of an address.
func TestCertsTrustRemove(t *testing.T) {
	k := newKeysEnv(t)
	dir := t.TempDir()
	old, _ := ctCert{cn: "Carol 2024", emails: []string{"carol@example.com"}, notBefore: time.Now().Add(-60 * 24 * time.Hour)}.make(t)
	newer, _ := ctCert{cn: "Carol 2025", emails: []string{"carol@example.com"}, notBefore: time.Now().Add(-24 * time.Hour)}.make(t)
	oldFile := writePEM(t, filepath.Join(dir, "old.pem"), old)
	k.mustRun(exitOK, "certs", "import", "--user", "alice", oldFile, writePEM(t, filepath.Join(dir, "new.pem"), newer))
	oldFP, newFP := keystore.Fingerprint(old), keystore.Fingerprint(newer)

	first := func() string {
		t.Helper()
		out, _ := k.mustRun(exitOK, "certs", "list", "--user", "alice", "carol@example.com")
		lines := checkColumns(t, out, 6)
		if len(lines) == 0 {
			return ""
		}
		return lines[0]
	}
	if l := first(); !strings.Contains(l, newFP) {
		t.Errorf("first row %q, want the newer certificate %s", l, newFP[:16])
	}

	// openssl x509 -fingerprint -sha256 style: upper case with colons.
	var colon []string
	for i := 0; i < 16; i += 2 {
		colon = append(colon, strings.ToUpper(oldFP[i:i+2]))
	}
	out, _ := k.mustRun(exitOK, "certs", "trust", "--user", "alice", "carol@example.com", strings.Join(colon, ":"))
	if !strings.Contains(out, "trust user") {
		t.Errorf("trust output %q", out)
	}
	if l := first(); !strings.Contains(l, oldFP) || !strings.Contains(l, " user ") {
		t.Errorf("after trust: first row %q, want the trusted older certificate", l)
	}
	k.mustRun(exitOK, "certs", "import", "--user", "alice", oldFile)
	if l := first(); !strings.Contains(l, oldFP) || !strings.Contains(l, " user ") {
		t.Errorf("after an untrusted re-import: first row %q, want trust kept", l)
	}
	k.mustRun(exitOK, "certs", "trust", "--user", "alice", "--none", "carol@example.com", oldFP[:8])
	if l := first(); !strings.Contains(l, newFP) {
		t.Errorf("after trust --none: first row %q, want the newer certificate again", l)
	}

	// Errors: unknown or too short fingerprints, another user's book.
	_, errs := k.mustRun(exitError, "certs", "trust", "--user", "alice", "carol@example.com", "00000000")
	if !strings.Contains(errs, "has no certificate 00000000") {
		t.Errorf("trust of an unknown fingerprint: stderr %q", errs)
	}
	_, errs = k.mustRun(exitError, "certs", "remove", "--user", "alice", "carol@example.com", "abc")
	if !strings.Contains(errs, "at least 8 hex digits") {
		t.Errorf("remove with a short fingerprint: stderr %q", errs)
	}
	k.mustRun(exitError, "certs", "remove", "--user", "bob", "carol@example.com", oldFP)

	out, _ = k.mustRun(exitOK, "certs", "remove", "--user", "alice", "carol@example.com", newFP[:12])
	if !strings.Contains(out, "removed "+newFP[:16]) {
		t.Errorf("remove output %q", out)
	}
	if l := first(); !strings.Contains(l, oldFP) {
		t.Errorf("after remove: first row %q, want the remaining older certificate", l)
	}
	k.mustRun(exitOK, "certs", "remove", "--user", "alice", "--all", "carol@example.com")
	if _, errs := k.mustRun(exitOK, "certs", "list", "--user", "alice"); !strings.Contains(errs, "no certificates") {
		t.Errorf("after remove --all: stderr %q", errs)
	}
}
