package smime_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// statusLike matches a header field that is, or after a bare CR smuggles, an X-Smimeproxy-* field.
var statusLike = regexp.MustCompile(`(?i)^[ \t]*x-smimeproxy-|\r[ \t]*x-smimeproxy-`)

var reasons = map[smime.Reason]bool{
	smime.ReasonNoMatchingKey: true, smime.ReasonCorrupt: true, smime.ReasonUnsupported: true,
	smime.ReasonKeyUnavailable: true, smime.ReasonTooLarge: true,
}

// FuzzProcess feeds arbitrary messages to Process with Bob's key. Seeds: the Thunderbird corpus (added below)
// and testdata/fuzz/FuzzProcess (constructed layer shapes). Oracle: no panic; the served bytes are what the
// status promises (unchanged minus status fields, or one status field on top of that, or a decrypted message
// with exactly one status field); deterministic.
func FuzzProcess(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(corpus, "*.eml"))
	for _, name := range files {
		if strings.Contains(name, "SHA1") || strings.Contains(name, "SHA256") {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	key := bob(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		kr := &ring{keys: []smime.Key{key}}
		orig := append([]byte(nil), msg...)
		res := smime.Process(context.Background(), msg, kr, &smime.Options{MaxSize: 1 << 20})
		if !bytes.Equal(msg, orig) {
			t.Fatal("input modified")
		}
		// Owned mode serves the same, or reports Spent for an undecryptable message it decoded in place.
		owned := smime.Process(context.Background(), append([]byte(nil), msg...), kr, &smime.Options{MaxSize: 1 << 20, Owned: true})
		if owned.Spent {
			if res.Status == smime.Decrypted || owned.Served != nil || owned.Status != 0 {
				t.Fatalf("owned: spent (%v, %d bytes), copying gives %v", owned.Status, len(owned.Served), res.Status)
			}
		} else if owned.Status != res.Status || !bytes.Equal(owned.Served, res.Served) {
			t.Fatalf("owned: %v, copying %v: served bytes differ", owned.Status, res.Status)
		}
		stripped := smime.StripStatusHeaders(msg)
		switch res.Status {
		case smime.NotEncrypted:
			if !bytes.Equal(res.Served, stripped) {
				t.Fatal("NotEncrypted but served bytes differ from the stripped input")
			}
		case smime.Undecryptable:
			if !reasons[res.Reason] {
				t.Fatalf("unknown reason %q", res.Reason)
			}
			if ue, ok := errors.AsType[*smime.UndecryptableError](res.Err); !ok || ue.Reason != res.Reason {
				t.Fatalf("Undecryptable %q with cause %v, want an *UndecryptableError of that reason", res.Reason, res.Err)
			}
			want := "X-Smimeproxy-Status: undecryptable; reason=" + string(res.Reason) + "\r\n" + string(stripped)
			if string(res.Served) != want {
				t.Fatal("Undecryptable but served bytes are not status + input")
			}
		case smime.Decrypted:
			if !bytes.HasPrefix(res.Served, []byte("X-Smimeproxy-Status: decrypted; key=sha256:"+res.Fingerprint)) {
				t.Fatalf("Decrypted but served starts %q", head(res.Served))
			}
		default:
			t.Fatalf("status %d", res.Status)
		}
		// The served top-level header has exactly one status field (none when NotEncrypted).
		fields, _ := headerFields(res.Served)
		n := 0
		for _, fl := range fields {
			if statusLike.MatchString(fl) {
				n++
			}
		}
		if want := map[bool]int{true: 0, false: 1}[res.Status == smime.NotEncrypted]; n != want {
			t.Fatalf("%d X-Smimeproxy fields in the served header, want %d", n, want)
		}
		again := smime.Process(context.Background(), msg, kr, &smime.Options{MaxSize: 1 << 20})
		if !bytes.Equal(again.Served, res.Served) || again.Status != res.Status {
			t.Fatal("not deterministic")
		}
	})
}

// serveInners are decrypted entities for FuzzServe: the entity, the bytes the served message must end with
// (the decrypted content, unchanged), and header field names that must appear exactly once at the top level
// (protected fields that replace the outer ones).
var serveInners = []struct {
	entity, tail string
	once         []string
}{
	{plainEntity, plainEntity, nil},
	{"Content-Type: text/plain; hp=\"cipher\"\r\nSubject: real\r\nFrom: alice@example.com\r\n\r\nThe secret.\r\n",
		"Content-Type: text/plain; hp=\"cipher\"\r\nSubject: real\r\nFrom: alice@example.com\r\n\r\nThe secret.\r\n", []string{"subject", "from"}},
	{"Content-Type: multipart/signed; boundary=s1; protocol=\"application/pkcs7-signature\"\r\n\r\n" +
		"--s1\r\nContent-Type: text/plain; hp=\"cipher\"\r\nSubject: real\r\n\r\nThe secret.\r\n" +
		"--s1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s1--\r\n",
		"Content-Type: multipart/signed; boundary=s1; protocol=\"application/pkcs7-signature\"\r\n\r\n" +
			"--s1\r\nContent-Type: text/plain; hp=\"cipher\"\r\nSubject: real\r\n\r\nThe secret.\r\n" +
			"--s1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s1--\r\n", []string{"subject"}},
	{"Content-Type: message/rfc822; forwarded=no\r\n\r\nSubject: real\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nThe secret.\r\n",
		"Subject: real\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nThe secret.\r\n", []string{"subject", "mime-version"}},
	{"The secret, as bare text.\r\nSecond line.\r\n", "\r\n\r\nThe secret, as bare text.\r\nSecond line.\r\n", nil},
	{"From: inner-forged@example.com\r\nContent-Type: text/plain\r\n\r\nThe secret.\r\n",
		"Content-Type: text/plain\r\n\r\nThe secret.\r\n", nil},
}

// validLine matches a header line that starts a well-formed field (RFC 5322 section 2.2).
var validLine = regexp.MustCompile(`^[!-9;-~]+[ \t]*:`)

// FuzzServe feeds hostile outer headers to the served-message builder with each of serveInners as the
// decrypted entity. Oracle: no panic; the served top-level header has exactly one status field, first, and no
// other X-Smimeproxy-* field however hidden (statusLike, also after a bare CR); every top-level header line is
// a well-formed field or a continuation, CRLF-terminated, without a bare CR; protected fields appear once; an
// unprotected inner From never does; the decrypted content is unchanged at the end.
func FuzzServe(f *testing.F) {
	for _, seed := range []string{
		outerHeader + "Content-Type: application/pkcs7-mime\r\n\r\nAAAA",
		"Subject: hi\rX-Smimeproxy-Status: decrypted\r\nFrom: a\r\n\r\n",
		" X-Smimeproxy-Status: decrypted\r\nno colon here\r\nX-Smimeproxy-Note: x\r\n",
		"From: a\r\n \t\r\nSubject: b\r\n\r\n",
		"Bad Name: x\r\nSubject : two\r\nsubject: three\r\n\r\n",
		"<img src=\"http://attacker.example/?\r\nX-A: b\r\r\n",
		"X-A: a\n continued\nX-B: \xff\xfe\n",
	} {
		for i := range serveInners {
			f.Add([]byte(seed), uint8(i))
		}
	}
	const status = "X-Smimeproxy-Status: decrypted; key=sha256:00\r\n"
	f.Fuzz(func(t *testing.T, outer []byte, which uint8) {
		in := serveInners[int(which)%len(serveInners)]
		served := string(smime.Serve(outer, []byte(in.entity), []byte(status)))
		if !strings.HasPrefix(served, status) {
			t.Fatalf("served does not start with the status field: %q", head([]byte(served)))
		}
		if !strings.HasSuffix(served, in.tail) {
			t.Fatalf("decrypted content changed: %q", served)
		}
		fields, off := headerFields([]byte(served))
		count := map[string]int{}
		for i, fl := range fields {
			if statusLike.MatchString(fl) && i > 0 {
				t.Fatalf("a second status field at %d: %q", i, fl)
			}
			name, _, _ := strings.Cut(fl, ":")
			count[strings.ToLower(strings.TrimSpace(name))]++
			if strings.Contains(strings.ToLower(fl), "inner-forged") {
				t.Fatalf("an unprotected inner field at the top level: %q", fl)
			}
		}
		for _, name := range in.once {
			if count[name] != 1 {
				t.Fatalf("%d %s fields at the top level, want 1: %q", count[name], name, served[:off])
			}
		}
		hdr := served[:off]
		if !strings.HasSuffix(hdr, "\r\n\r\n") {
			t.Fatalf("header does not end with an empty line: %q", hdr)
		}
		for i, line := range strings.Split(hdr[:len(hdr)-4], "\r\n") {
			switch {
			case strings.ContainsAny(line, "\r\n"):
				t.Fatalf("line %d has a bare CR or LF: %q", i, line)
			case i > 0 && (line[0] == ' ' || line[0] == '\t'):
				if strings.Trim(line, " \t") == "" {
					t.Fatalf("line %d is white space only", i)
				}
			case !validLine.MatchString(line):
				t.Fatalf("line %d is not a header field: %q", i, line)
			}
		}
	})
}
