package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/internal/imapfmt"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

const mixedMessage = "Subject: t\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npreamble\r\n--b\r\n" +
	"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n--b\r\n" +
	"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment\r\n\r\nAAEC/w==\r\n--b\r\n" +
	"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n" +
	"--b--\r\nepilogue\r\n"

// existsIn returns the part-existence test for msg.
func existsIn(msg string) func([]int) bool { return imapfmt.Parse([]byte(msg)).PartExists }

func TestPartExists(t *testing.T) {
	mixed := existsIn(mixedMessage)
	single := existsIn("Subject: s\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
	for _, tt := range []struct {
		bs   func([]int) bool
		part []int
		want bool
	}{
		{single, []int{1}, true},
		{single, []int{1, 1}, false}, // a non-multipart message has only part 1
		{single, []int{2}, false},
		{mixed, []int{1}, true},
		{mixed, []int{1, 1}, true}, // a leaf child's part 1 is itself (Dovecot)
		{mixed, []int{1, 1, 1}, false},
		{mixed, []int{3}, true},
		{mixed, []int{3, 1}, true}, // into the encapsulated message
		{mixed, []int{3, 2}, false},
		{mixed, []int{4}, false},
		{mixed, []int{0}, false},
	} {
		if got := tt.bs(tt.part); got != tt.want {
			t.Errorf("partExists(%v) = %v, want %v", tt.part, got, tt.want)
		}
	}
}

func TestBinarySection(t *testing.T) {
	msg := []byte(mixedMessage)
	bs := existsIn(mixedMessage)
	whole, err := binarySection(msg, nil, bs, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "Subject: t\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npreamble\r\n--b\r\n" +
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\ncafé\r\n--b\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Disposition: attachment\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\xff\r\n--b\r\n" +
		"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nhi\r\n" +
		"--b--\r\nepilogue\r\n"
	if string(whole) != want {
		t.Errorf("BINARY[] =\n%q\nwant\n%q", whole, want)
	}
	for part, want := range map[string]string{"1": "café", "2": "\x00\x01\x02\xff", "3.1": "hi"} {
		var p []int
		for _, c := range strings.Split(part, ".") {
			p = append(p, int(c[0]-'0'))
		}
		got, err := binarySection(msg, nil, bs, p)
		if err != nil || string(got) != want {
			t.Errorf("BINARY[%s] = %q, %v; want %q", part, got, err, want)
		}
	}
	if got, err := binarySection(msg, nil, bs, []int{9}); err != nil || len(got) != 0 {
		t.Errorf("BINARY[9] = %q, %v; want empty", got, err)
	}
	bad := []byte("Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n")
	if _, err := binarySection(bad, nil, existsIn(string(bad)), nil); err != errUnknownCTE {
		t.Errorf("unknown CTE: %v, want errUnknownCTE", err)
	}
	// no panic and no loss on a multipart without its closing delimiter or with a folded CTE field
	odd := []byte("Content-Type: multipart/mixed; boundary=z\r\nContent-Transfer-Encoding:\r\n 7bit\r\n\r\n--z\r\nContent-Transfer-Encoding:\r\n base64\r\n\r\nYQ==\r\n--z\r\n\r\nlast")
	got, err := binarySection(odd, nil, existsIn(string(odd)), nil)
	if err != nil || !bytes.Contains(got, []byte("\r\n\r\na\r\n--z\r\n\r\nlast")) || bytes.Contains(got, []byte("base64")) {
		t.Errorf("odd multipart: %q, %v", got, err)
	}
}

// FuzzBinarySection: BINARY and BODY section extraction over arbitrary messages never panics, and BINARY[]
// never loses the header of a message whose top-level encoding needs no conversion.
func FuzzBinarySection(f *testing.F) {
	f.Add([]byte(mixedMessage), 1, 1)
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\n--a--"), 1, 2)
	f.Add([]byte("Content-Transfer-Encoding: base64\r\n\r\n!!!"), 0, 0)
	f.Fuzz(func(t *testing.T, msg []byte, p1, p2 int) {
		if len(msg) > 1<<16 {
			return
		}
		bs := existsIn(string(msg))
		for _, part := range [][]int{nil, {p1 % 5}, {p1 % 5, p2 % 5}} {
			_, _ = binarySection(msg, nil, bs, part)
			for _, spec := range []imap.PartSpecifier{imap.PartSpecifierNone, imap.PartSpecifierHeader, imap.PartSpecifierText, imap.PartSpecifierMIME} {
				if spec == imap.PartSpecifierMIME && len(part) == 0 {
					continue
				}
				_ = bodySection(msg, nil, bs, &imap.FetchItemBodySection{Part: part, Specifier: spec})
			}
		}
		whole, err := binarySection(msg, nil, bs, nil)
		if err == nil && !bytes.Contains(bytes.ToLower(msg), []byte("content-transfer-encoding")) {
			hdr, _ := mimepart.SplitBlock(msg)
			if !bytes.HasPrefix(whole, hdr) {
				t.Fatalf("BINARY[] lost the header: %q → %q", msg, whole)
			}
		}
	})
}

// TestDeepNestingIsLinear: a hostile message nested 20,000 multiparts deep (issue 10, item 6) costs
// milliseconds for every section of a served copy, not minutes (go-imap's structure parser is quadratic).
func TestDeepNestingIsLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString("Subject: deep\r\n")
	for i := range 20000 {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\nhi\r\n")
	msg := []byte(b.String())
	start := time.Now()
	exists := existsIn(string(msg))
	deep := make([]int, 300)
	for i := range deep {
		deep[i] = 1
	}
	exists(deep)
	bodySection(msg, nil, exists, &imap.FetchItemBodySection{Part: []int{1, 1, 1}})
	binarySection(msg, nil, exists, []int{1, 1})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("sections of a 20,000-deep message took %v", d)
	}
}
