package mimepart_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

func names(msg string) []string {
	var out []string
	mimepart.EachField([]byte(msg), func(f mimepart.Field) { out = append(out, string(f.Name)+"|"+string(f.Raw)) })
	return out
}

// TestEachField pins the one header rule (RFC 5322 sections 2.1, 2.2, 2.2.3) on the inputs readers disagree
// about.
func TestEachField(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		want      []string
		body      string
	}{
		{"crlf", "A: 1\r\nB: 2\r\n\r\nbody", []string{"A|A: 1\r\n", "B|B: 2\r\n"}, "body"},
		{"bare lf", "A: 1\nB: 2\n\nbody", []string{"A|A: 1\n", "B|B: 2\n"}, "body"},
		{"folded", "A: 1\r\n 2\r\n\t3\r\nB: x\r\n\r\n", []string{"A|A: 1\r\n 2\r\n\t3\r\n", "B|B: x\r\n"}, ""},
		{"bare cr is not a line end", "Subject: x\rX-Smimeproxy-Status: y\r\n\r\n", []string{"Subject|Subject: x\rX-Smimeproxy-Status: y\r\n"}, ""},
		{"indented first line starts a field", " X-Smimeproxy-Status: y\r\nB: 1\r\n\r\n", []string{"X-Smimeproxy-Status| X-Smimeproxy-Status: y\r\n", "B|B: 1\r\n"}, ""},
		{"no colon", "garbage line\r\nB: 1\r\n\r\n", []string{"garbage line|garbage line\r\n", "B|B: 1\r\n"}, ""},
		{"space before colon", "B : 1\r\n\r\n", []string{"B|B : 1\r\n"}, ""},
		{"missing blank line", "A: 1\r\nB: 2", []string{"A|A: 1\r\n", "B|B: 2"}, ""},
		{"empty header", "\r\nbody", nil, "body"},
		{"whitespace-only line continues", "A: 1\r\n \r\nB: 2\r\n\r\n", []string{"A|A: 1\r\n \r\n", "B|B: 2\r\n"}, ""},
		{"nul", "A\x00B: 1\r\n\r\n", []string{"A\x00B|A\x00B: 1\r\n"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := names(tc.msg)
			if strings.Join(got, "\x01") != strings.Join(tc.want, "\x01") {
				t.Errorf("fields = %q, want %q", got, tc.want)
			}
			if _, body := mimepart.Split([]byte(tc.msg)); string(body) != tc.body {
				t.Errorf("body = %q, want %q", body, tc.body)
			}
		})
	}
}

func TestHeaderComplete(t *testing.T) {
	for msg, want := range map[string]bool{
		"A: 1\r\n\r\n": true, "A: 1\n\n": true, "\r\n": true, "\n": true, "A: 1\r\n": false,
		"A: 1\r\n\r": false, "A: 1\r\n \r\n": false, "A: 1\r\n\r\nbody": true, "": false,
	} {
		if got := mimepart.HeaderComplete([]byte(msg)); got != want {
			t.Errorf("HeaderComplete(%q) = %v, want %v", msg, got, want)
		}
	}
}

func TestValue(t *testing.T) {
	if v := mimepart.Get([]byte("Subject: a\r\n b\r\n\tc \r\n\r\n"), "subject"); v != "a b\tc" {
		t.Errorf("Get = %q", v)
	}
	if v := mimepart.Values([]byte("X: 1\r\nx: 2\r\nY: 3\r\n"), "X"); len(v) != 2 || v[0] != "1" || v[1] != "2" {
		t.Errorf("Values = %q", v)
	}
}

// TestDecode pins the one transfer decoder (RFC 2045 section 6).
func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		cte, in, want string
		err           error
	}{
		{"", "as is", "as is", nil},
		{" 8BIT ", "as is", "as is", nil},
		{"binary", "\x00\xff", "\x00\xff", nil},
		{"base64", "aGVsbG8=\r\n", "hello", nil},
		{"Base64", "aGVs\r\nbG8\r\n", "hello", nil},                 // missing padding, short line
		{"base64", "aGVs bG8=\r\n", "hello", nil},                   // space inside
		{"base64", "aGVsbG8=aGVsbG8=", "", mimepart.ErrBadEncoding}, // text after padding
		{"base64", "aGVs*bG8=", "", mimepart.ErrBadEncoding},
		{"base64", "aGVsb", "", mimepart.ErrBadEncoding}, // one byte of a group
		{"quoted-printable", "caf=C3=A9=\r\n!", "café!", nil},
		{"quoted-printable", "bad=ZZ", "bad=ZZ", nil}, // mime/quotedprintable keeps a bad escape as it is
		{"x-uuencode", "begin", "", mimepart.ErrUnknownEncoding},
		{"7bit; junk", "x", "", mimepart.ErrUnknownEncoding},
	} {
		got, err := mimepart.Decode(tc.cte, []byte(tc.in))
		if !errors.Is(err, tc.err) || err == nil && string(got) != tc.want {
			t.Errorf("Decode(%q, %q) = %q, %v; want %q, %v", tc.cte, tc.in, got, err, tc.want, tc.err)
		}
	}
}

const nested = "MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n" +
	"preamble\r\n" +
	"--outer\r\n" +
	"Content-Type: text/plain\r\n\r\n" +
	"part one\r\n" +
	"--outer\r\n" +
	"Content-Type: message/rfc822\r\n\r\n" +
	"Subject: inner\r\n" +
	"Content-Type: multipart/alternative; boundary=in\r\n\r\n" +
	"--in\r\n\r\ninner text\r\n" +
	"--in\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n" +
	"--in--\r\n" +
	"--outer \t\r\n" +
	"Content-Type: image/png\r\n\r\n" +
	"png\r\n" +
	"--outer--\r\n" +
	"epilogue\r\n"

// TestSection checks the tree and IMAP part numbering (RFC 9051 section 6.4.5).
func TestSection(t *testing.T) {
	root := mimepart.Parse([]byte(nested))
	for _, tc := range []struct {
		path     []int
		mt, body string
	}{
		{nil, "multipart/mixed", ""},
		{[]int{1}, "text/plain", "part one"},
		{[]int{2}, "message/rfc822", ""},
		{[]int{2, 1}, "text/plain", "inner text"},
		{[]int{2, 2}, "text/html", "PGI+aGk8L2I+"},
		{[]int{3}, "image/png", "png"},
		{[]int{3, 1}, "image/png", "png"}, // a leaf's part 1 is itself
		{[]int{3, 2}, "", ""},
		{[]int{4}, "", ""},
		{[]int{0}, "", ""},
		{[]int{1, 2}, "", ""},
		{[]int{2, 3}, "", ""},
	} {
		p := root.Section(tc.path)
		if tc.mt == "" {
			if p != nil {
				t.Errorf("Section(%v) = %s, want none", tc.path, p.MediaType)
			}
			continue
		}
		if p == nil || p.MediaType != tc.mt || tc.body != "" && string(p.Body) != tc.body {
			t.Errorf("Section(%v) = %+v, want %s %q", tc.path, p, tc.mt, tc.body)
		}
	}
	if dec, err := root.Section([]int{2, 2}).Decoded(); err != nil || string(dec) != "<b>hi</b>" {
		t.Errorf("Decoded = %q, %v", dec, err)
	}
	// A single-part message: part 1 is its body.
	single := mimepart.Parse([]byte("Subject: s\r\n\r\nhello"))
	if p := single.Section([]int{1}); p != single || string(p.Body) != "hello" {
		t.Errorf("Section(1) of a single part = %v", p)
	}
	// The layout around the parts is kept (BINARY[] rebuilds a multipart from it).
	start, end, ok := root.Delimiters()
	if !ok || len(start) != 3 || string(root.Body[:start[0]]) != "preamble\r\n--outer\r\n" ||
		string(root.Body[end[2]:]) != "\r\n--outer--\r\nepilogue\r\n" {
		t.Errorf("Delimiters = %v %v %v", start, end, ok)
	}
}

// TestDigestDefault: a part without Content-Type in a multipart/digest is message/rfc822 (RFC 2046 section
// 5.1.5).
func TestDigestDefault(t *testing.T) {
	msg := "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: x\r\n\r\nhi\r\n--d--\r\n"
	p := mimepart.Parse([]byte(msg)).Section([]int{1})
	if p == nil || p.MediaType != "message/rfc822" || p.Message == nil || p.Message.Get("Subject") != "x" {
		t.Fatalf("digest part = %+v", p)
	}
}

// TestBounds: nesting beyond MaxDepth and parts beyond MaxParts are leaves, and parsing stays fast.
func TestBounds(t *testing.T) {
	var b strings.Builder
	for range mimepart.MaxDepth + 50 {
		b.WriteString("Content-Type: message/rfc822\r\n\r\n")
	}
	b.WriteString("hi")
	depth := 0
	for p := mimepart.Parse([]byte(b.String())); p.Message != nil; p = p.Message {
		depth++
	}
	if depth != mimepart.MaxDepth {
		t.Errorf("depth = %d, want %d", depth, mimepart.MaxDepth)
	}
	many := "Content-Type: multipart/mixed; boundary=b\r\n\r\n" + strings.Repeat("--b\r\n\r\nx\r\n", 3*mimepart.MaxParts)
	count := 0
	mimepart.Parse([]byte(many)).Walk(func(*mimepart.Part) bool { count++; return true })
	if count > mimepart.MaxParts {
		t.Errorf("%d parts, want at most %d", count, mimepart.MaxParts)
	}
}

// FuzzParse: no panic on any input; the tree's slices are the input's bytes in order; bounded; every part is
// reached by Section through its own path.
func FuzzParse(f *testing.F) {
	f.Add([]byte(nested))
	f.Add([]byte("Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: x\r\n\r\nhi\r\n--d--\r\n"))
	f.Add([]byte("Subject: x\rX-Smimeproxy-Status: y\n \nContent-Type: message/rfc822\n\nA: b"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		orig := bytes.Clone(msg)
		root := mimepart.Parse(msg)
		if !bytes.Equal(msg, orig) {
			t.Fatal("input modified")
		}
		var check func(p *mimepart.Part, path []int)
		check = func(p *mimepart.Part, path []int) {
			if len(p.Header)+len(p.Body) > len(p.Raw) || !bytes.HasPrefix(p.Raw, p.Header) || !bytes.HasSuffix(p.Raw, p.Body) {
				t.Fatalf("part %v: header/body not in raw", path)
			}
			if path != nil && root.Section(path) != p {
				t.Fatalf("Section(%v) is not the part at that path", path)
			}
			for i, c := range p.Parts {
				if !bytes.Contains(p.Body, c.Raw) {
					t.Fatalf("part %v.%d not in its parent's body", path, i+1)
				}
				check(c, append(append([]int(nil), path...), i+1))
			}
			if m := p.Message; m != nil {
				if len(m.Raw) != len(p.Body) {
					t.Fatalf("part %v: message is not the body", path)
				}
				base := path
				if base == nil {
					base = []int{1} // the top-level body is part 1
				}
				if m.Multipart {
					for i, c := range m.Parts {
						check(c, append(append([]int(nil), base...), i+1))
					}
				} else {
					check(m, append(append([]int(nil), base...), 1))
				}
			}
			mimepart.Decode(p.Encoding, p.Body)
		}
		check(root, nil)
		count := 0
		root.Walk(func(*mimepart.Part) bool { count++; return true })
		if count > mimepart.MaxParts {
			t.Fatalf("%d parts", count)
		}
		mimepart.HeaderComplete(msg)
	})
}
