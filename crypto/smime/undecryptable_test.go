package smime_test

import (
	"bytes"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// explainOpts are the options of a proxy serving undecryptable messages with an explanation, with a marker
// parameter like decrypt's.
var explainOpts = &smime.Options{Explain: true, StatusParams: []string{"ref=AAAA", "mac=BBBB"}}

// parseWrapper reads an explanation wrapper with the standard library's parsers (not the package's own): the
// top header, the explanation text and the raw bytes of the second part's body and its header.
func parseWrapper(t *testing.T, served []byte) (*mail.Message, string, *multipart.Part, []byte) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(served))
	if err != nil {
		t.Fatalf("served copy is not a message: %v", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q (%v), want multipart/mixed", m.Header.Get("Content-Type"), err)
	}
	r := multipart.NewReader(m.Body, params["boundary"])
	p1, err := r.NextRawPart()
	if err != nil {
		t.Fatalf("first part: %v", err)
	}
	if ct := p1.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("first part Content-Type %q, want text/plain", ct)
	}
	text, _ := io.ReadAll(p1)
	p2, err := r.NextRawPart()
	if err != nil {
		t.Fatalf("second part: %v", err)
	}
	body, _ := io.ReadAll(p2)
	if _, err := r.NextRawPart(); err != io.EOF {
		t.Errorf("a third part or a bad close delimiter: %v", err)
	}
	return m, string(text), p2, body
}

func TestExplainUndecryptable(t *testing.T) {
	carol := identity(t, 2048, "Carol")
	bobK := identity(t, 2048, "Bob")
	msg := encryptedMessage(t, plainEntity, carol.Cert)
	res := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{bobK}}, explainOpts)
	if res.Status != smime.Undecryptable || res.Reason != smime.ReasonNoMatchingKey {
		t.Fatalf("Process = %v %q, want undecryptable no-matching-key", res.Status, res.Reason)
	}
	wantStatus := "X-Smimeproxy-Status: undecryptable; reason=no-matching-key; ref=AAAA; mac=BBBB\r\n"
	if !bytes.HasPrefix(res.Served, []byte(wantStatus)) {
		t.Errorf("first line %q, want %q", head(res.Served), wantStatus)
	}
	m, text, p2, body := parseWrapper(t, res.Served)
	// The header pane shows the message's own fields, once each.
	for _, f := range []string{"From", "To", "Subject", "Date", "Message-Id"} {
		if got, want := m.Header[f], origField(t, msg, f); len(got) != 1 || got[0] != want {
			t.Errorf("top %s = %q, want [%q]", f, got, want)
		}
	}
	if got := m.Header["Mime-Version"]; len(got) != 1 {
		t.Errorf("MIME-Version fields %q, want one", got)
	}
	if text != smime.Explanation(smime.ReasonNoMatchingKey) {
		t.Errorf("explanation %q", text)
	}
	for _, want := range []string{"could not decrypt", "reason: no-matching-key", "smimeproxy keys", "smime.p7m"} {
		if !strings.Contains(text, want) {
			t.Errorf("explanation lacks %q: %q", want, text)
		}
	}
	// The second part is the original: its header, then its body.
	if ct := p2.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/pkcs7-mime") {
		t.Errorf("second part Content-Type %q, want the original's application/pkcs7-mime", ct)
	}
	if _, ob, _ := bytes.Cut(msg, []byte("\r\n\r\n")); !bytes.Equal(body, ob) {
		t.Errorf("second part body differs from the original's (%d vs %d bytes)", len(body), len(ob))
	}
	if got := smime.OriginalOf(res.Served); !bytes.Equal(got, msg) {
		t.Errorf("OriginalOf(wrapper) is not the original:\n%q", head(got))
	}
	// Deterministic: the same input serves the same bytes (a cache miss serves what a hit served).
	if again := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{bobK}}, explainOpts); !bytes.Equal(again.Served, res.Served) {
		t.Error("two wrappers of the same message differ")
	}
	// Without Explain: the original under the status field, as before.
	plain := smime.Process(context.Background(), msg, &ring{keys: []smime.Key{bobK}}, &smime.Options{StatusParams: explainOpts.StatusParams})
	if want := wantStatus + string(msg); string(plain.Served) != want {
		t.Errorf("without Explain served %q", head(plain.Served))
	}
}

// origField is the value of field name in msg, as net/mail reads it.
func origField(t *testing.T, msg []byte, name string) string {
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return m.Header.Get(name)
}

// Every reason, and originals of every shape, give back the original, minus forged status fields, byte for byte.
func TestOriginalOfRoundTrip(t *testing.T) {
	carol := identity(t, 2048, "Carol")
	enc := encryptedMessage(t, plainEntity, carol.Cert)
	_, encBody, _ := bytes.Cut(enc, []byte("\r\n\r\n"))
	cases := map[string]struct {
		msg    []byte
		kr     smime.Keyring
		opts   smime.Options
		reason smime.Reason
	}{
		"no key":     {msg: enc, reason: smime.ReasonNoMatchingKey},
		"vault down": {msg: enc, kr: &ring{err: errVaultDown}, reason: smime.ReasonKeyUnavailable},
		"too large": {msg: enc, kr: &ring{keys: []smime.Key{carol}}, opts: smime.Options{MaxSize: 100},
			reason: smime.ReasonTooLarge},
		"corrupt": {msg: []byte(outerHeader + "Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			b64([]byte("not CMS"))), kr: &ring{keys: []smime.Key{carol}}, reason: smime.ReasonCorrupt},
		"forged status fields": {msg: append([]byte("X-Smimeproxy-Status: decrypted\r\nx-smimeproxy-signature: good\r\n"), enc...),
			reason: smime.ReasonNoMatchingKey},
		"bare LF":           {msg: bytes.ReplaceAll(enc, []byte("\r\n"), []byte("\n")), reason: smime.ReasonNoMatchingKey},
		"no final line end": {msg: bytes.TrimRight(enc, "\r\n"), reason: smime.ReasonNoMatchingKey},
		"folded and malformed header": {msg: []byte("Subject: a\r\n folded subject\r\nnot a field\r\nReceived: x\r\n" +
			"Content-Type: application/pkcs7-mime;\r\n smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			string(encBody)), reason: smime.ReasonNoMatchingKey},
		"signed around encrypted": {msg: []byte(outerHeader + "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";" +
			" micalg=sha-256; boundary=\"sig\"\r\n\r\n--sig\r\n" + p7mPart(envelop(t, []byte(plainEntity), carol.Cert)) +
			"\r\n--sig\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--sig--\r\n"), reason: smime.ReasonNoMatchingKey},
	}
	for name, c := range cases {
		o := c.opts
		o.Explain, o.StatusParams = true, explainOpts.StatusParams
		res := smime.Process(context.Background(), c.msg, c.kr, &o)
		if res.Status != smime.Undecryptable || res.Reason != c.reason {
			t.Errorf("%s: Process = %v %q, want undecryptable %q", name, res.Status, res.Reason, c.reason)
			continue
		}
		if !bytes.HasPrefix(res.Served, []byte("X-Smimeproxy-Status: undecryptable; reason="+c.reason+";")) {
			t.Errorf("%s: first line %q", name, head(res.Served))
		}
		if !bytes.Contains(res.Served, []byte(smime.Explanation(c.reason))) {
			t.Errorf("%s: the explanation for %s is not served", name, c.reason)
		}
		want := smime.StripStatusHeaders(c.msg)
		if got := smime.OriginalOf(res.Served); !bytes.Equal(got, want) {
			t.Errorf("%s: OriginalOf = %q, want the original %q", name, head(got), head(want))
		}
		// The signature status field decrypt adds below the status line does not matter either.
		withSig := append([]byte("X-Smimeproxy-Signature: none\r\n"), res.Served...)
		if got := smime.OriginalOf(withSig); !bytes.Equal(got, want) {
			t.Errorf("%s: OriginalOf with a signature field is not the original", name)
		}
		if got := smime.ServeUndecryptable(c.msg, c.reason, &o); !bytes.Equal(got.Served, res.Served) {
			t.Errorf("%s: ServeUndecryptable differs from Process", name)
		}
	}
}

// An edited wrapper is not unwrapped: the edit would be lost. It is stored as it is, without status fields.
func TestOriginalOfEdited(t *testing.T) {
	carol := identity(t, 2048, "Carol")
	msg := encryptedMessage(t, plainEntity, carol.Cert)
	served := smime.Process(context.Background(), msg, nil, explainOpts).Served
	edits := map[string][]byte{
		"explanation":  bytes.Replace(served, []byte("could not decrypt"), []byte("could not decrypt (noted)"), 1),
		"subject":      bytes.Replace(served, []byte("Subject: test"), []byte("Subject: test 2"), 1),
		"line ends":    bytes.ReplaceAll(served, []byte("\r\n"), []byte("\n")),
		"reason":       bytes.Replace(served, []byte("reason=no-matching-key"), []byte("reason=corrupt"), 1),
		"status":       bytes.Replace(served, []byte("undecryptable;"), []byte("decrypted;"), 1),
		"no status":    smime.StripStatusHeaders(served),
		"two statuses": append([]byte("X-Smimeproxy-Status: undecryptable; reason=no-matching-key\r\n"), served...),
		"appended part": bytes.Replace(served, []byte("\r\n--smimeproxy-undecryptable-"),
			[]byte("\r\n--smimeproxy-undecryptable-x\r\n\r\nmore\r\n--smimeproxy-undecryptable-"), 1),
	}
	for name, m := range edits {
		got := smime.OriginalOf(m)
		if bytes.Equal(got, msg) {
			t.Errorf("%s: an edited wrapper was unwrapped", name)
		}
		if want := smime.StripStatusHeaders(m); !bytes.Equal(got, want) {
			t.Errorf("%s: OriginalOf = %q, want the message without status fields", name, head(got))
		}
	}
	// Not a wrapper at all: status fields removed, as StripStatusHeaders does.
	for _, m := range [][]byte{msg, []byte("X-Smimeproxy-Status: undecryptable; reason=corrupt\r\nSubject: x\r\n\r\nbody\r\n"), nil} {
		if got, want := smime.OriginalOf(m), smime.StripStatusHeaders(m); !bytes.Equal(got, want) {
			t.Errorf("OriginalOf(%q) = %q, want %q", head(m), got, want)
		}
	}
}

// FuzzOriginalOf: for any message, the explanation wrapper gives back the message minus its status fields.
func FuzzOriginalOf(f *testing.F) {
	f.Add([]byte("Subject: x\r\nContent-Type: application/pkcs7-mime\r\n\r\nAAAA\r\n"), "corrupt")
	f.Add([]byte("--smimeproxy-undecryptable-\r\n"), "too-large")
	f.Add([]byte("X-Smimeproxy-Status: x\r\n\tfolded\r\n\r\n\r\n--a--\r\n"), "no-matching-key")
	f.Add([]byte(""), "")
	f.Fuzz(func(t *testing.T, msg []byte, reason string) {
		if strings.Trim(reason, "abcdefghijklmnopqrstuvwxyz-") != "" {
			return // not a reason smime writes
		}
		served := smime.ServeUndecryptable(msg, smime.Reason(reason), explainOpts).Served
		if got, want := smime.OriginalOf(served), smime.StripStatusHeaders(msg); !bytes.Equal(got, want) {
			t.Fatalf("OriginalOf(wrapper of %q) = %q", msg, got)
		}
	})
}

// A header line " :" (an empty field name) is not copied under the status field, where it would fold into it
// (found by FuzzOriginalOf; serve's validOuterField): neither in a decrypted copy nor in a wrapper.
func TestEmptyFieldNameNotCopied(t *testing.T) {
	bobK := identity(t, 2048, "Bob")
	msg := append([]byte(" :x\r\n"), encryptedMessage(t, plainEntity, bobK.Cert)...)
	for _, res := range []smime.Result{
		smime.Process(context.Background(), msg, &ring{keys: []smime.Key{bobK}}, nil),
		smime.Process(context.Background(), msg, nil, explainOpts),
	} {
		_, rest, _ := bytes.Cut(res.Served, []byte("\r\n"))
		if res.Status == smime.NotEncrypted || bytes.HasPrefix(rest, []byte(" ")) {
			t.Errorf("%v: the line after the status field is %q", res.Status, head(rest))
		}
	}
}
