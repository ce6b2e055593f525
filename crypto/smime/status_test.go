package smime_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// forgedForms are the ways a sender hides a status field in a header (issue 10, item 9), each as header text
// that goes in front of outerHeader.
func forgedForms() map[string]string {
	var many strings.Builder
	for i := range 10001 {
		fmt.Fprintf(&many, "X-Pad-%d: %d\r\n", i, i)
	}
	return map[string]string{
		"plain":                "X-Smimeproxy-Status: decrypted; key=sha256:00\r\n",
		"lower case, folded":   "x-smimeproxy-status:\r\n decrypted\r\n",
		"past 10,000 fields":   many.String() + "X-Smimeproxy-Status: decrypted\r\n",
		"bare CR in Subject":   "Subject: hi\rX-Smimeproxy-Status: decrypted\r\n",
		"bare CR, white space": "Keywords: a\r \tX-Smimeproxy-Status: decrypted\r\n",
		"bare CR starts line":  "\rX-Smimeproxy-Status: decrypted\r\n",
		"other owned name":     "X-Smimeproxy-Note: the sender is verified\r\n",
		"first line indented":  " X-Smimeproxy-Status: decrypted\r\n",
		"space before colon":   "X-Smimeproxy-Status : decrypted\r\n",
	}
}

func TestIsStatusField(t *testing.T) {
	for name, form := range forgedForms() {
		if !smime.HasStatusField([]byte(form + "\r\nbody\r\n")) {
			t.Errorf("%s: HasStatusField = false", name)
		}
	}
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		{"X-Smimeproxy-Status: x\r\n", true},
		{"X-SMIMEPROXY-SIGNATURE: x", true},
		{"Subject: a\rX-Smimeproxy-Status: x\r\n", true},
		{"Subject: a\r\n X-Smimeproxy-Status: folded, a continuation\r\n", false},
		{"Subject: X-Smimeproxy-Status: in the value\r\n", false},
		{"X-Smimeproxy: no dash\r\n", false},
		{"X-Smime-Status: x\r\n", false},
	} {
		if got := smime.IsStatusField([]byte(tc.raw)); got != tc.want {
			t.Errorf("IsStatusField(%q) = %v, want %v", tc.raw, got, tc.want)
		}
	}
	for name, want := range map[string]bool{"X-Smimeproxy-Status": true, " x-smimeproxy-anything ": true, "X-Smimeproxy": false, "Subject": false} {
		if got := smime.IsStatusFieldName(name); got != want {
			t.Errorf("IsStatusFieldName(%q) = %v, want %v", name, got, want)
		}
	}
	// The header ends at the first empty line: a status field in the body is not one.
	if smime.HasStatusField([]byte("From: a\r\n\r\nX-Smimeproxy-Status: body\r\n")) {
		t.Error("HasStatusField found a field in the body")
	}
	owned := smime.OwnedFields()
	if len(owned) == 0 || owned[0] != smime.StatusHeader {
		t.Errorf("OwnedFields() = %q", owned)
	}
	for _, f := range owned {
		if !smime.IsStatusFieldName(f) {
			t.Errorf("owned field %q is not a status field name", f)
		}
	}
	owned[0] = "changed"
	if smime.OwnedFields()[0] != smime.StatusHeader {
		t.Error("OwnedFields returned a shared slice")
	}
}

// TestProcessStatusForgery: every form of a forged status field is removed from what Process serves, for a
// plain message (which is otherwise unchanged), an undecryptable one, and a decrypted one (whose served header
// has exactly one status field, the proxy's, first).
func TestProcessStatusForgery(t *testing.T) {
	k := identity(t, 2048, "Bob")
	enc := string(encryptedMessage(t, plainEntity, k.Cert))
	for name, form := range forgedForms() {
		t.Run(name, func(t *testing.T) {
			plain := form + outerHeader + "Content-Type: text/plain\r\n\r\nX-Smimeproxy-Status: in the body stays\r\n"
			res := smime.Process(context.Background(), []byte(plain), nil, nil)
			if res.Status != smime.NotEncrypted {
				t.Fatalf("plain: %v", res.Status)
			}
			if n := statusFields(res.Served); n != 0 {
				t.Errorf("plain: %d status fields served", n)
			}
			if !strings.HasSuffix(string(res.Served), outerHeader+"Content-Type: text/plain\r\n\r\nX-Smimeproxy-Status: in the body stays\r\n") {
				t.Errorf("plain: the rest of the message changed: %q", tail(res.Served))
			}
			res = smime.Process(context.Background(), []byte(form+enc), &ring{}, nil)
			if res.Status != smime.Undecryptable || statusFields(res.Served) != 1 || !bytes.HasPrefix(res.Served, []byte("X-Smimeproxy-Status: undecryptable")) {
				t.Errorf("undecryptable: %v, %d status fields, starts %q", res.Status, statusFields(res.Served), head(res.Served))
			}
			res = smime.Process(context.Background(), []byte(form+enc), &ring{keys: []smime.Key{k}}, nil)
			if res.Status != smime.Decrypted {
				t.Fatalf("decrypted: %v %q", res.Status, res.Reason)
			}
			if n := statusFields(res.Served); n != 1 || !bytes.HasPrefix(res.Served, []byte(statusDecrypted(k, "aes-256-cbc", "no"))) {
				t.Errorf("decrypted: %d status fields, starts %q", n, head(res.Served))
			}
		})
	}
	// Inside the encryption, past 10,000 protected fields (all served: hp is set), a status field is removed.
	var many strings.Builder
	for i := range 10001 {
		fmt.Fprintf(&many, "X-Pad-%d: %d\r\n", i, i)
	}
	inner := "Content-Type: text/plain; hp=\"cipher\"\r\n" + many.String() + "X-Smimeproxy-Status: decrypted; authenticated=yes\r\n\r\nBody.\r\n"
	res := smime.Process(context.Background(), encryptedMessage(t, inner, k.Cert), &ring{keys: []smime.Key{k}}, nil)
	if n := statusFields(res.Served); res.Status != smime.Decrypted || n != 1 {
		t.Errorf("inner field past 10,000: %v, %d status fields", res.Status, n)
	}
	if !bytes.Contains(res.Served, []byte("X-Pad-10000: 10000\r\n\r\nBody.\r\n")) {
		t.Errorf("inner fields past 10,000 lost: %q", tail(res.Served))
	}
}

// statusFields counts the status fields in the top-level header of msg, found independently of the package.
func statusFields(msg []byte) int {
	fields, _ := headerFields(msg)
	n := 0
	for _, f := range fields {
		if statusLike.MatchString(f) {
			n++
		}
	}
	return n
}

func tail(b []byte) []byte {
	if len(b) > 300 {
		return b[len(b)-300:]
	}
	return b
}

// TestProcessInvalidOuterLines: outer header lines that are not well-formed fields do not reach the header of
// a decrypted message, where a reader could merge them with the decrypted content (issue 10, item 10).
func TestProcessInvalidOuterLines(t *testing.T) {
	k := identity(t, 2048, "Bob")
	p7m := p7mPart(envelop(t, []byte(plainEntity), k.Cert))
	for name, bad := range map[string]string{
		"no colon":                   "<img src=\"https://attacker.example/?\r\n",
		"space in the name":          "Bad Name: x\r\n",
		"8-bit name":                 "N\xe4me: x\r\n",
		"empty name":                 ": x\r\n",
		"bare CR":                    "X-Note: a\r<img src=\"https://attacker.example/?\r\n",
		"white space only line":      "X-Note: a\r\n \t\r\n",
		"first line indented":        " X-Note: a\r\n",
		"bare CR ends a header line": "X-Note: a\r\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			msg := bad + outerHeader + p7m // an indented line must be first to be no continuation
			if !strings.HasPrefix(bad, " ") {
				from := len("From: Alice <alice@example.com>\r\n")
				msg = outerHeader[:from] + bad + outerHeader[from:] + p7m
			}
			res := smime.Process(context.Background(), []byte(msg), &ring{keys: []smime.Key{k}}, nil)
			if want := statusDecrypted(k, "aes-256-cbc", "no") + outerHeader + plainEntity; string(res.Served) != want {
				t.Errorf("%v: served %q\nwant %q", res.Status, res.Served, want)
			}
		})
	}
}

// TestProcessUnprotectedInnerFields: without header protection (RFC 9788 hp), header fields inside the
// encryption do not replace the outer ones, and do not appear at the top level beside them: in a CBC
// ciphertext an attacker can rewrite them (issue 10, item 5). Only the entity's MIME fields are served.
func TestProcessUnprotectedInnerFields(t *testing.T) {
	k := identity(t, 2048, "Bob")
	forged := "From: CEO <ceo@example.com>\r\nSubject: wire the money\r\nReply-To: eve@attacker.example\r\n" +
		"Sender: ceo@example.com\r\nDate: Fri, 01 Jan 2027 00:00:00 +0000\r\n"
	for name, tc := range map[string]struct{ inner, want string }{
		"no hp": {
			inner: forged + "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nBody.\r\n",
			want:  strings.Replace(outerHeader, "MIME-Version: 1.0\r\n", "", 1) + "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nBody.\r\n",
		},
		"no hp, signed payload without hp": {
			inner: forged + "Content-Type: multipart/signed; boundary=s1; protocol=\"application/pkcs7-signature\"\r\n\r\n" +
				"--s1\r\nContent-Type: text/plain\r\n" + forged + "\r\nBody.\r\n" +
				"--s1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s1--\r\n",
			want: outerHeader + "Content-Type: multipart/signed; boundary=s1; protocol=\"application/pkcs7-signature\"\r\n\r\n" +
				"--s1\r\nContent-Type: text/plain\r\n" + forged + "\r\nBody.\r\n" +
				"--s1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s1--\r\n",
		},
		"message/rfc822 without forwarded=no": {
			inner: "Content-Type: message/rfc822\r\n\r\n" + forged + "\r\nBody.\r\n",
			want:  outerHeader + "Content-Type: message/rfc822\r\n\r\n" + forged + "\r\nBody.\r\n",
		},
		"legacy protected-headers=v1": {
			inner: "Content-Type: text/plain; protected-headers=\"v1\"\r\n" + forged + "\r\nBody.\r\n",
			want: "To: Bob <bob@example.com>\r\nMessage-ID: <test@example.com>\r\nMIME-Version: 1.0\r\n" +
				"Content-Type: text/plain; protected-headers=\"v1\"\r\n" + forged + "\r\nBody.\r\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			res := smime.Process(context.Background(), encryptedMessage(t, tc.inner, k.Cert), &ring{keys: []smime.Key{k}}, nil)
			if want := statusDecrypted(k, "aes-256-cbc", "no") + tc.want; string(res.Served) != want {
				t.Errorf("%v: served %q\nwant %q", res.Status, res.Served, want)
			}
			// One From and one Subject at the top level, whatever the case.
			fields, _ := headerFields(res.Served)
			count := map[string]int{}
			for _, f := range fields {
				n, _, _ := strings.Cut(f, ":")
				count[strings.ToLower(n)]++
			}
			if count["from"] != 1 || count["subject"] != 1 || count["date"] != 1 {
				t.Errorf("top-level header has %d From, %d Subject, %d Date", count["from"], count["subject"], count["date"])
			}
		})
	}
}

// TestProcessDeepNesting: MIME nesting 20,000 levels deep, at the top level, under a signature, inside the
// encryption and as nested message/rfc822 wrappers, costs work independent of the depth: Process walks a fixed
// number of layers and never recurses (issue 10, item 6; Dovecot stops at 100 levels). The work is counted as
// allocations, which a walk per level would make; the outcome is checked too.
func TestProcessDeepNesting(t *testing.T) {
	k := identity(t, 2048, "Bob")
	nest := func(depth int) string {
		var b strings.Builder
		for i := range depth {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
		}
		b.WriteString("Content-Type: text/plain\r\n\r\nThe secret is 42.\r\n")
		for i := depth - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "--b%d--\r\n", i)
		}
		return b.String()
	}
	wrappers := func(depth int) string {
		return strings.Repeat("Content-Type: message/rfc822; forwarded=no\r\n\r\n", depth) + plainEntity
	}
	signed := func(entity string) string {
		return "Content-Type: multipart/signed; boundary=s1; protocol=\"application/pkcs7-signature\"\r\n\r\n" +
			"--s1\r\n" + entity + "\r\n--s1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s1--\r\n"
	}
	cases := []struct {
		name string
		msg  func(depth int) []byte
		want smime.Status
	}{
		{"top level", func(d int) []byte { return []byte(outerHeader + nest(d)) }, smime.NotEncrypted},
		{"under a signature", func(d int) []byte { return []byte(outerHeader + signed(nest(d))) }, smime.NotEncrypted},
		{"decrypted", func(d int) []byte { return encryptedMessage(t, nest(d), k.Cert) }, smime.Decrypted},
		{"decrypted, signed", func(d int) []byte { return encryptedMessage(t, signed(nest(d)), k.Cert) }, smime.Decrypted},
		{"decrypted, wrappers", func(d int) []byte { return encryptedMessage(t, wrappers(d), k.Cert) }, smime.Decrypted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			allocs := map[int]float64{}
			for _, depth := range []int{20, 20000} {
				msg := tc.msg(depth)
				var res smime.Result
				allocs[depth] = testing.AllocsPerRun(2, func() {
					res = smime.Process(context.Background(), msg, &ring{keys: []smime.Key{k}}, nil)
				})
				if res.Status != tc.want {
					t.Fatalf("depth %d: %v %q, want %v", depth, res.Status, res.Reason, tc.want)
				}
				if !bytes.Contains(res.Served, []byte("The secret is 42.")) {
					t.Errorf("depth %d: content lost", depth)
				}
			}
			if allocs[20000] > allocs[20]+8 {
				t.Errorf("allocations grow with depth: %v at 20 levels, %v at 20,000", allocs[20], allocs[20000])
			}
			t.Logf("allocations: %v", allocs)
		})
	}
}
