package decrypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// sigCaps is a DER SMIMECapabilities value (RFC 8551 section 2.5.2): aes256-CBC only.
var sigCaps = func() []byte {
	b, err := asn1.Marshal([]struct{ ID asn1.ObjectIdentifier }{{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}}})
	if err != nil {
		panic(err)
	}
	return b
}()

// signCMS signs content with cert and key (SHA-256, with SMIMECapabilities), detached or not.
func signCMS(t testing.TB, content []byte, cert *x509.Certificate, key *rsa.PrivateKey, detached bool) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	attr := pkcs7.Attribute{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 15}, Value: asn1.RawValue{FullBytes: sigCaps}}
	if err := sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{ExtraSignedAttributes: []pkcs7.Attribute{attr}}); err != nil {
		t.Fatal(err)
	}
	if detached {
		sd.Detach()
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func base64Lines(der []byte) string {
	enc := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	return b.String() + enc + "\r\n"
}

// multipartSigned is a multipart/signed message (RFC 8551 section 3.5.3) with header fields hdr on top.
func multipartSigned(t testing.TB, hdr, body string, cert *x509.Certificate, key *rsa.PrivateKey) []byte {
	t.Helper()
	part := "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
	return []byte(hdr + "MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"sig-b\"\r\n\r\n" +
		"--sig-b\r\n" + part + "\r\n--sig-b\r\n" +
		"Content-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64Lines(signCMS(t, []byte(part), cert, key, true)) + "--sig-b--\r\n")
}

// opaqueEntity is an application/pkcs7-mime signed-data entity (RFC 8551 section 3.5.2) holding body.
func opaqueEntity(t testing.TB, body string, cert *x509.Certificate, key *rsa.PrivateKey) string {
	t.Helper()
	inner := "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
	return "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64Lines(signCMS(t, []byte(inner), cert, key, false))
}

// testCA makes a CA and a certificate for email issued by it.
func testCA(t testing.TB, email string) (ca, leaf *x509.Certificate, key *rsa.PrivateKey) {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Mail CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: email},
		EmailAddresses: []string{email}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	return ca, leaf, key
}

type sigFixture struct {
	*fixture
	book *keystore.MemoryBook
}

// newSigFixture is newFixture with an in-memory address book and no system roots (cas are the only anchors).
func newSigFixture(t testing.TB, noHarvest bool, cas ...*x509.Certificate) *sigFixture {
	t.Helper()
	f := newFixture(t, 0)
	book := keystore.NewMemoryBook()
	d, err := New(Options{Store: f.store, Metrics: f.metrics, Contacts: book, Roots: x509.NewCertPool(), CAs: cas, NoHarvest: noHarvest})
	if err != nil {
		t.Fatal(err)
	}
	f.d = d
	return &sigFixture{fixture: f, book: book}
}

func (f *sigFixture) serve(t testing.TB, user string, uid uint32, msg []byte) []byte {
	t.Helper()
	var calls atomic.Int32
	served, err := f.d.Rewrite(context.Background(), MessageRef{User: user, Mailbox: "INBOX", UIDValidity: 1, UID: uid}, rawOf(msg, &calls))
	if err != nil {
		t.Fatal(err)
	}
	f.d.WaitHarvest()
	return served
}

func signatureOf(served []byte) string {
	v := mimepart.Values(served, SignatureField)
	if len(v) != 1 {
		return strings.Join(v, " | ")
	}
	return v[0]
}

const carolHdr = "From: Carol <carol@example.org>\r\nTo: alice@example.com\r\nSubject: signed\r\n"

// TestSignaturePlainSigned: a plain multipart/signed message from an untrusted (self-signed) signer is served
// byte for byte as stored, minus a forged signature field, under the real status; carol's certificate and
// capabilities land in alice's book only.
func TestSignaturePlainSigned(t *testing.T) {
	f := newSigFixture(t, false)
	cert, key := testIdentity(t, "carol@example.org")
	orig := multipartSigned(t, carolHdr, "Hello from carol, pelican-9.", cert, key)
	forged := append([]byte("X-Smimeproxy-Signature: valid; signer=carol@example.org; trust=chain\r\n"), orig...)
	served := f.serve(t, "alice", 1, forged)
	if got := signatureOf(served); got != "invalid; reason=untrusted" {
		t.Errorf("signature field = %q, want invalid; reason=untrusted", got)
	}
	if _, rest, _ := bytes.Cut(served, []byte("\r\n")); !bytes.Equal(rest, orig) {
		t.Errorf("served copy is not the stored message under one field:\n%s", served)
	}
	if statusOf(served) != "" {
		t.Errorf("a plain message got a decryption status %q", statusOf(served))
	}
	cs, err := f.book.List(context.Background(), "alice")
	if err != nil || len(cs) != 1 {
		t.Fatalf("alice's book: %v, %d entries, want carol's certificate", err, len(cs))
	}
	c := cs[0]
	if c.Address != "carol@example.org" || c.Fingerprint != keystore.Fingerprint(cert) || c.Trust != keystore.TrustNone ||
		c.Source != keystore.SourceHarvest || !bytes.Equal(c.Capabilities, sigCaps) {
		t.Errorf("harvested %s %s trust=%s source=%s caps=%x", c.Address, c.Fingerprint, c.Trust, c.Source, c.Capabilities)
	}
	if cs, _ := f.book.List(context.Background(), "bob"); len(cs) != 0 {
		t.Errorf("bob's book has %d entries", len(cs))
	}
}

// TestSignatureChainAndBook: a signer under a configured CA is valid with trust=chain (harvested as chain); a
// self-signed signer the user marked trusted is valid with trust=address-book.
func TestSignatureChainAndBook(t *testing.T) {
	ca, leaf, key := testCA(t, "carol@example.org")
	f := newSigFixture(t, false, ca)
	served := f.serve(t, "alice", 1, multipartSigned(t, carolHdr, "chained", leaf, key))
	want := "valid; signer=carol@example.org; cert=sha256:" + keystore.Fingerprint(leaf) + "; trust=chain"
	if got := signatureOf(served); got != want {
		t.Errorf("signature field = %q, want %q", got, want)
	}
	if cs, _ := f.book.Certificates(context.Background(), "alice", "carol@example.org"); len(cs) != 1 || cs[0].Trust != keystore.TrustChain {
		t.Errorf("harvested: %+v, want one with trust chain", cs)
	}

	cert, key2 := testIdentity(t, "dave@example.org")
	if _, err := f.book.Add(context.Background(), "alice", cert, keystore.AddOptions{Trust: keystore.TrustUser}); err != nil {
		t.Fatal(err)
	}
	msg := multipartSigned(t, "From: dave@example.org\r\nSubject: hi\r\n", "from dave", cert, key2)
	if got := signatureOf(f.serve(t, "alice", 2, msg)); !strings.HasPrefix(got, "valid; signer=dave@example.org;") ||
		!strings.HasSuffix(got, "; trust=address-book") {
		t.Errorf("user-trusted signer: %q", got)
	}
	if got := signatureOf(f.serve(t, "bob", 2, msg)); got != "invalid; reason=untrusted" {
		t.Errorf("bob does not trust dave: %q", got)
	}
	// The harvest does not lower alice's trust in dave.
	if cs, _ := f.book.Certificates(context.Background(), "alice", "dave@example.org"); len(cs) != 1 || cs[0].Trust != keystore.TrustUser {
		t.Errorf("dave in alice's book: %+v", cs)
	}
}

// TestSignatureNotHarvested: a changed message, a From address the certificate does not name, and
// --harvest-certs=false leave the book empty.
func TestSignatureNotHarvested(t *testing.T) {
	cert, key := testIdentity(t, "carol@example.org")
	f := newSigFixture(t, false)
	tampered := bytes.Replace(multipartSigned(t, carolHdr, "pay 10 EUR", cert, key), []byte("pay 10 EUR"), []byte("pay 99 EUR"), 1)
	if got := signatureOf(f.serve(t, "alice", 1, tampered)); got != "invalid; reason=bad-digest" {
		t.Errorf("tampered: %q", got)
	}
	mallory := multipartSigned(t, "From: ceo@example.org\r\nSubject: x\r\n", "hi", cert, key)
	if got := signatureOf(f.serve(t, "alice", 2, mallory)); got != "invalid; reason=untrusted" {
		t.Errorf("other From, untrusted: %q", got)
	}
	if cs, _ := f.book.List(context.Background(), "alice"); len(cs) != 0 {
		t.Errorf("harvested from a bad signature or another sender: %d entries", len(cs))
	}
	ca, leaf, leafKey := testCA(t, "carol@example.org")
	f = newSigFixture(t, false, ca)
	mallory = multipartSigned(t, "From: ceo@example.org\r\nSubject: x\r\n", "hi", leaf, leafKey)
	if got := signatureOf(f.serve(t, "alice", 2, mallory)); got != "invalid; reason=address-mismatch" {
		t.Errorf("other From: %q", got)
	}
	if cs, _ := f.book.List(context.Background(), "alice"); len(cs) != 0 {
		t.Errorf("harvested from bad signatures: %d entries", len(cs))
	}
	off := newSigFixture(t, true)
	if got := signatureOf(off.serve(t, "alice", 1, multipartSigned(t, carolHdr, "hi", cert, key))); got != "invalid; reason=untrusted" {
		t.Errorf("harvest off: %q", got)
	}
	if cs, _ := off.book.List(context.Background(), "alice"); len(cs) != 0 {
		t.Errorf("harvest off: %d entries", len(cs))
	}
}

// TestSignatureUnderDecryption: signed (opaque) then encrypted: the signature under the decryption layer is
// reported, the APPEND marker still verifies, and SEARCH BODY finds text inside the signed-data.
func TestSignatureUnderDecryption(t *testing.T) {
	ca, leaf, key := testCA(t, "carol@example.org")
	f := newSigFixture(t, false, ca)
	msg := encryptedMessage(t, "sealed", opaqueEntity(t, "The heron-4 flies at dawn.\r\n", leaf, key), f.cert)
	msg = bytes.Replace(msg, []byte("From: alice@example.com"), []byte("From: carol@example.org"), 1)
	ref := MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 7}
	served := f.serve(t, "alice", 7, msg)
	if statusOf(served) != "decrypted" || !bytes.HasPrefix(served, []byte(StatusField+": decrypted;")) {
		t.Fatalf("status %q is not the first field", statusOf(served))
	}
	if got := signatureOf(served); !strings.HasPrefix(got, "valid; signer=carol@example.org;") || !strings.HasSuffix(got, "trust=chain") {
		t.Errorf("signature field = %q", got)
	}
	if got, ok := f.d.Origin("alice", served); !ok || got != ref {
		t.Errorf("Origin = %+v, %v: the signature field broke the marker", got, ok)
	}
	if !MatchText(served, "HERON-4", false) {
		t.Error("SEARCH BODY does not find text inside the decrypted opaque signed-data")
	}
	if MatchText(msg, "heron-4", false) {
		t.Error("found text inside the ciphertext")
	}
	if cs, _ := f.book.List(context.Background(), "alice"); len(cs) != 1 || cs[0].Fingerprint != keystore.Fingerprint(leaf) {
		t.Errorf("alice's book: %+v", cs)
	}
	// The same message for bob, who cannot decrypt it: no signature layer counts (only the ciphertext's top).
	if got := mimepart.Values(f.serve(t, "bob", 7, msg), SignatureField); len(got) != 0 {
		t.Errorf("undecryptable message got a signature field %q", got)
	}
}

// TestSignatureOpaquePlain: a plain opaque signed-data message is served with its status and searchable.
func TestSignatureOpaquePlain(t *testing.T) {
	cert, key := testIdentity(t, "carol@example.org")
	f := newSigFixture(t, false)
	msg := []byte(carolHdr + "MIME-Version: 1.0\r\n" + opaqueEntity(t, "Quiet ibis-8.\r\n", cert, key))
	served := f.serve(t, "alice", 1, msg)
	if got := signatureOf(served); got != "invalid; reason=untrusted" {
		t.Errorf("signature field = %q", got)
	}
	if !bytes.HasSuffix(served, msg) {
		t.Error("the signed bytes are not served unchanged")
	}
	if !MatchText(served, "ibis-8", false) || !MatchText(msg, "IBIS-8", true) || MatchText(served, "ibis-9", true) {
		t.Error("MatchText inside opaque signed-data")
	}
}

// TestSignatureForgedOnUnsigned: a forged signature field on an unsigned plain message is removed and nothing
// is added; an unsigned message is not a candidate by its structure.
func TestSignatureForgedOnUnsigned(t *testing.T) {
	f := newSigFixture(t, false)
	msg := []byte("X-Smimeproxy-Signature: valid; signer=ceo@example.org; trust=chain\r\n" + carolHdr + "\r\nplain\r\n")
	served := f.serve(t, "alice", 1, msg)
	if !bytes.Equal(served, []byte(carolHdr+"\r\nplain\r\n")) {
		t.Errorf("served %q", served)
	}
	if !NeedsStrip(msg) || !f.d.OwnsField(SignatureField) || !strings.Contains(strings.Join(f.d.StatusFields(), ","), SignatureField) {
		t.Error("the signature field is not one of the proxy's own fields")
	}
	cert, key := testIdentity(t, "x@example.org")
	if !signedTop(multipartSigned(t, carolHdr, "x", cert, key)) || signedTop(msg) ||
		signedTop(encryptedMessage(t, "e", innerText, f.cert)) {
		t.Error("signedTop")
	}
}

// failingBook fails every call (Vault unreachable).
type failingBook struct{ keystore.AddressBook }

func (failingBook) Certificates(context.Context, string, string) ([]keystore.Contact, error) {
	return nil, context.DeadlineExceeded
}

// TestSignatureBookUnavailable: when the address book cannot be read the outcome is served but not cached, so
// a user-trusted signer is recognised once the book is back.
func TestSignatureBookUnavailable(t *testing.T) {
	f := newFixture(t, 0)
	d, err := New(Options{Store: f.store, Contacts: failingBook{keystore.NewMemoryBook()}, Roots: x509.NewCertPool(), NoHarvest: true})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := testIdentity(t, "carol@example.org")
	msg := multipartSigned(t, carolHdr, "hi", cert, key)
	var calls atomic.Int32
	ref := MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 1}
	for range 2 {
		served, err := d.Rewrite(context.Background(), ref, rawOf(msg, &calls))
		if err != nil || signatureOf(served) != "invalid; reason=untrusted" {
			t.Fatalf("%v %q", err, signatureOf(served))
		}
	}
	if calls.Load() != 2 {
		t.Errorf("%d fetches, want 2: an outcome without the address book was cached", calls.Load())
	}
}

// TestSignatureHeaderValueSanitized: control characters never split the field.
func TestSignatureHeaderValueSanitized(t *testing.T) {
	got := withSignatureField([]byte("From: a\r\n\r\nb"), "valid; signer=a\r\nX-Evil: 1")
	if !bytes.HasPrefix(got, []byte(SignatureField+": valid; signer=aX-Evil: 1\r\nFrom: a\r\n")) {
		t.Errorf("%q", got)
	}
	if got := withSignatureField([]byte("From: a\n\nb"), "v"); string(got) != SignatureField+": v\nFrom: a\n\nb" {
		t.Errorf("LF message: %q", got)
	}
	got = withSignatureField([]byte("X-Smimeproxy-Status: decrypted; mac=x\r\nFrom: a\r\n\r\nb"), "v")
	if string(got) != "X-Smimeproxy-Status: decrypted; mac=x\r\n"+smime.SignatureHeader+": v\r\nFrom: a\r\n\r\nb" {
		t.Errorf("after the status field: %q", got)
	}
}
