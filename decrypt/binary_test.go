package decrypt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// binaryAppends are literal8 APPENDs (RFC 3516) with binary parts in the places Dovecot's converter looks.
func binaryAppends() []string {
	bin := make([]byte, 200)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	// Dovecot serves NUL as 0x80 and a bare LF as CRLF in a part it does not convert, for any APPEND; the
	// proxy serves what was appended. The parts left alone here have neither.
	var eight []byte
	for i := range 200 {
		eight = append(eight, byte(0x80+i%0x7f))
	}
	return []string{
		// imaptest's append-binary
		"From: user@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nMime-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00-\xff\r\n\r\n\r\n",
		// multipart: one part converted, one whose value has spaces around it left alone, a long one wrapped
		"From: u@d\r\nContent-Type: multipart/mixed; boundary=xx\r\n\r\npre\r\n--xx\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nh\xc3\xa9llo\r\n--xx\r\nContent-Type: application/octet-stream\r\ncontent-transfer-encoding:   Binary  \r\n\r\n" + string(eight) + "\r\n--xx\r\ncontent-transfer-encoding:BINARY\r\nContent-Type: application/octet-stream\r\n\r\n" + string(bin) + "\r\n--xx--\r\nepi\r\n",
		// inside message/rfc822
		"From: u@d\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00inner\r\n",
		// a multipart marked binary is not converted, nor is a folded field; its parts are
		"From: u@d\r\nContent-Transfer-Encoding: binary\r\nContent-Type: multipart/mixed;\r\n boundary=\"b 1\"\r\n\r\n--b 1\r\nContent-Transfer-Encoding:\r\n binary\r\n\r\n\xe9a\r\n--b 1\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\r\n\r\n--b 1--\r\n",
		// no binary part: unchanged
		"From: u@d\r\nSubject: binary\r\n\r\nbinary text\r\n",
	}
}

// TestConvertBinaryPartsLikeDovecot: the conversion gives, byte for byte, what real Dovecot serves as BODY[]
// for the same literal8 APPEND made directly (so an encrypted APPEND is served back as Dovecot would).
func TestConvertBinaryPartsLikeDovecot(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	c, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	read := func(tag string) string {
		var b strings.Builder
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			l, err := br.ReadString('\n')
			b.WriteString(l)
			if err != nil {
				t.Fatalf("read: %v after %q", err, b.String())
			}
			if m := regexp.MustCompile(`\{(\d+)\}\r\n$`).FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[1])
				buf := make([]byte, n)
				if _, err := io.ReadFull(br, buf); err != nil {
					t.Fatal(err)
				}
				b.Write(buf)
				continue
			}
			if strings.HasPrefix(l, tag+" ") {
				return b.String()
			}
		}
	}
	read("*")
	fmt.Fprintf(c, "a LOGIN alice %s\r\n", d.Password("alice"))
	read("a")
	msgs := binaryAppends()
	for i, m := range msgs {
		fmt.Fprintf(c, "b%d APPEND INBOX ~{%d}\r\n", i, len(m))
		read("+")
		c.Write([]byte(m + "\r\n"))
		if r := read(fmt.Sprintf("b%d", i)); !strings.Contains(r, " OK ") {
			t.Fatalf("APPEND %d: %q", i, r)
		}
	}
	fmt.Fprintf(c, "c SELECT INBOX\r\n")
	read("c")
	converted := 0
	for i, m := range msgs {
		tag := fmt.Sprintf("d%d", i)
		fmt.Fprintf(c, "%s FETCH %d (BODY.PEEK[])\r\n", tag, i+1)
		r := read(tag)
		_, lit, ok := strings.Cut(r, "}\r\n")
		if !ok {
			t.Fatalf("FETCH %d: %q", i+1, r)
		}
		n, _ := strconv.Atoi(r[strings.LastIndexByte(r[:strings.Index(r, "}\r\n")], '{')+1 : strings.Index(r, "}\r\n")])
		want := lit[:n]
		got := convertBinaryParts([]byte(m))
		if string(got) != want {
			t.Errorf("message %d:\n got %q\nwant %q", i+1, got, want)
		}
		if string(got) != m {
			converted++
		}
	}
	if converted != 4 {
		t.Errorf("%d messages converted, want 4 (the test would not show anything)", converted)
	}
}

// TestConvertBinaryPartsNoChange: messages without a convertible part come back as the same slice.
func TestConvertBinaryPartsNoChange(t *testing.T) {
	for _, m := range []string{
		"Subject: binary\r\n\r\nbinary",
		"Content-Transfer-Encoding: binary\r\n", // no body
		"Content-Type: multipart/mixed; boundary=x\r\nContent-Transfer-Encoding: binary\r\n\r\n--x\r\n\r\nbinary\r\n--x--\r\n",
	} {
		in := []byte(m)
		if out := convertBinaryParts(in); !bytes.Equal(out, in) || &out[0] != &in[0] {
			t.Errorf("%q changed to %q", m, out)
		}
	}
}
