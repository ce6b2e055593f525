package main

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
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// sigB64 is base64 in lines of 76 characters with CRLF.
func sigB64(der []byte) string {
	enc := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	return b.String() + enc + "\r\n"
}

// sigSign signs content (SHA-256), detached or not.
func sigSign(t *testing.T, content []byte, cert *x509.Certificate, key *rsa.PrivateKey, detached bool) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
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

// sigCert makes a certificate for email signed by parent/parentKey (self-signed when parent is nil).
func sigCert(t *testing.T, email string, ca bool, parent *x509.Certificate, parentKey *rsa.PrivateKey) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: email},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	if ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	} else {
		tmpl.EmailAddresses = []string{email}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func sigField(msg []byte) []string {
	hdr, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	var out []string
	for _, l := range strings.Split(string(hdr), "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "X-Smimeproxy-Signature") {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// TestServeSignatures (issue 11): through 'smimeproxy serve' with a real Dovecot and Vault, a signed message
// from carol (a Go-made CA given with --ca-bundle) is served with its signature status and carol's certificate
// is harvested into alice's address book only; a signed-then-encrypted message is decrypted with the inner
// signature's status and SEARCH BODY finds a word inside its opaque signed-data; a self-signed signer is
// untrusted; a forged signature field on unsigned mail is removed.
func TestServeSignatures(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"alice": "alice-pw", "bob": "bob-pw"}})
	v := testenv.StartVault(t)
	vars := map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": v.RootToken(), "HOME": t.TempDir()}
	run := func(args ...string) string {
		t.Helper()
		env, out, errb := testEnv(vars)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if code := runMain(ctx, env, args); code != exitOK {
			t.Fatalf("%v = %d\n%s%s", args, code, out, errb)
		}
		return out.String() + errb.String()
	}
	run("keys", "import", "--user", "alice", cmsKeys+"rsa.key", cmsKeys+"rsa.pem")
	aliceCert, err := x509.ParseCertificate(pemBlock(t, readFile(t, cmsKeys+"rsa.pem")))
	if err != nil {
		t.Fatal(err)
	}

	ca, caKey := sigCert(t, "Test Mail CA", true, nil, nil)
	carol, carolKey := sigCert(t, "carol@example.org", false, ca, caKey)
	erin, erinKey := sigCert(t, "erin@example.org", false, nil, nil)
	bundle := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	fp := func(c *x509.Certificate) string { s := sha256.Sum256(c.Raw); return hex.EncodeToString(s[:]) }

	multipart := func(from string, cert *x509.Certificate, key *rsa.PrivateKey, body string) []byte {
		part := "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
		return []byte("From: " + from + "\r\nTo: alice@example.com\r\nSubject: signed\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b1\"\r\n\r\n" +
			"--b1\r\n" + part + "\r\n--b1\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + sigB64(sigSign(t, []byte(part), cert, key, true)) + "--b1--\r\n")
	}
	signedMsg := multipart("Carol <carol@example.org>", carol, carolKey, "Hello from carol, pelican-9.")
	// Signed (opaque) by carol, then encrypted to alice.
	opaque := "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" +
		sigB64(sigSign(t, []byte("Content-Type: text/plain\r\n\r\nThe heron-4 flies at dawn.\r\n"), carol, carolKey, false))
	pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC // the default, DES, is not supported
	env, err := pkcs7.Encrypt([]byte(opaque), []*x509.Certificate{aliceCert})
	if err != nil {
		t.Fatal(err)
	}
	sealedMsg := []byte("From: carol@example.org\r\nTo: alice@example.com\r\nSubject: sealed\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + sigB64(env))
	erinMsg := multipart("erin@example.org", erin, erinKey, "self-signed")
	forgedMsg := []byte("X-Smimeproxy-Signature: valid; signer=ceo@example.org; trust=chain\r\n" +
		"From: ceo@example.org\r\nSubject: plain\r\n\r\nunsigned\r\n")

	uids := map[string]uint32{}
	for name, m := range map[string][]byte{"signed": signedMsg, "sealed": sealedMsg, "erin": erinMsg, "forged": forgedMsg} {
		uids[name] = uint32(d.Append("alice", "INBOX", m, nil, time.Time{}))
	}
	d.Append("bob", "INBOX", forgedMsg, nil, time.Time{})

	envS, _, stderr := demoEnv(vars)
	p := startServe(t, envS, stderr, "--listen", "127.0.0.1:0", "--upstream", "imaps://"+d.TLSAddr(),
		"--upstream-ca-file", d.CAFile(), "--log-level", "debug", "--ca-bundle", bundle)

	names := []string{"signed", "sealed", "erin", "forged"}
	ops := []pyOp{opSelect("INBOX", true), opSearch("BODY", "heron-4"), opSearch("BODY", "pelican-9")}
	for _, n := range names {
		ops = append(ops, opFetch(strconv.Itoa(int(uids[n])), "(BODY.PEEK[])"))
	}
	res := runPy(t, p.addr, "alice", "alice-pw", ops)
	byUID := map[uint32][]byte{}
	for i, n := range names {
		byUID[uids[n]] = res[3+i].literal(t)
	}
	wantCarol := "valid; signer=carol@example.org; cert=sha256:" + fp(carol) + "; trust=chain"
	if got := sigField(byUID[uids["signed"]]); !slices.Equal(got, []string{wantCarol}) {
		t.Errorf("signed: %q, want %q", got, wantCarol)
	}
	if !bytes.HasSuffix(byUID[uids["signed"]], signedMsg) {
		t.Error("signed: the stored bytes are not served unchanged under the field")
	}
	sealed := byUID[uids["sealed"]]
	if status(sealed) != "decrypted" || !slices.Equal(sigField(sealed), []string{wantCarol}) {
		t.Errorf("sealed: status %q, signature %q", statusFields(sealed), sigField(sealed))
	}
	if got := sigField(byUID[uids["erin"]]); !slices.Equal(got, []string{"invalid; reason=untrusted"}) {
		t.Errorf("erin: %q", got)
	}
	if f := byUID[uids["forged"]]; len(sigField(f)) != 0 || !bytes.Contains(f, []byte("unsigned")) {
		t.Errorf("forged field served: %q", f)
	}
	if got := strings.Fields(res[1].text()); !slices.Equal(got, []string{strconv.Itoa(int(uids["sealed"]))}) {
		t.Errorf("SEARCH BODY heron-4 = %q, want the sealed message %d", got, uids["sealed"])
	}
	if got := strings.Fields(res[2].text()); !slices.Equal(got, []string{strconv.Itoa(int(uids["signed"]))}) {
		t.Errorf("SEARCH BODY pelican-9 = %q, want %d", got, uids["signed"])
	}
	bobRes := runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1", "(BODY.PEEK[])")})
	if m := bobRes[1].literal(t); len(sigField(m)) != 0 || !bytes.Contains(m, []byte("unsigned")) {
		t.Errorf("bob: forged field served: %q", m)
	}

	// Harvesting is asynchronous: wait for carol in alice's book.
	var list string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if list = run("certs", "list", "--user", "alice"); strings.Contains(list, fp(carol)) && strings.Contains(list, fp(erin)) {
			break
		}
	}
	var carolLine string
	for _, l := range strings.Split(list, "\n") {
		if strings.Contains(l, fp(carol)) {
			carolLine = l
		}
	}
	if f := strings.Fields(carolLine); len(f) < 2 || f[0] != "carol@example.org" || f[len(f)-2] != "chain" || f[len(f)-1] != "harvested" {
		t.Errorf("certs list --user alice: carol missing or wrong:\n%s", list)
	}
	if !strings.Contains(list, fp(erin)) {
		t.Errorf("certs list --user alice: the untrusted signer erin was not harvested (trust none):\n%s", list)
	}
	if out := run("certs", "list", "--user", "bob"); strings.Contains(out, "example.org") {
		t.Errorf("bob's book is not empty:\n%s", out)
	}
	p.stop()
}

func pemBlock(t *testing.T, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}
