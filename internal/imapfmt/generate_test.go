package imapfmt

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// messageGenerator builds random, often malformed, messages from fragments that exercise the corners of
// Dovecot's parsers: folding, comments, quoting, groups, parameters, boundaries and line endings.
type messageGenerator struct {
	r *rand.Rand
	// boundaries are those of the enclosing multiparts, so that bodies can contain them.
	boundaries []string
}

var (
	textFragments = []string{"a", "b", "word", "Foo.Bar", " ", "  ", "\t", ",", ";", ":", "@", ".", "..", "<", ">",
		"\"", "\\", "(", ")", "[", "]", "=", "*", "'", "%", "/", "?", "=?utf-8?q?x=C3=A4?=", "ü", "Grüße", "-", "--",
		"x@y.test", "<a@b.test>", "\"q s\"", "(c)", "\n ", "\n\t", "\r", "0", "12", "text/plain", "NIL", "{3}"}
	addressFragments = []string{"a@b.test", "Name <n@x.test>", "\"Q, N\" <q@x.test>", "g: a@b.test, c@d.test;",
		"undisclosed-recipients:;", "<@r.test:u@h.test>", "u@h.test (Comment)", "(c) u@h.test", "John Doe",
		"<>", "a@", "@b", "\"x\"@y.test", "a.@b.test", "x@[1.2.3.4]", "=?utf-8?b?w6Q=?= <e@x.test>", "Jörg <j@x.test>",
		"a . b @ c . d", "<a@b.test", "g:;", "\"unterminated", "(unterminated", ""}
	typeFragments = []string{"text/plain", "text/html", "TEXT/PLAIN", "text", "multipart", "application/pdf",
		"image/png", "message/rfc822", "message/partial", "garbage", "", "text/", "/plain", "text/plain x",
		"text / plain", "text/plain (c)", "application/pkcs7-mime", "multipart/x"}
	paramFragments = []string{"charset=utf-8", "charset=\"US-ASCII\"", "name=\"a b.txt\"", "name*=utf-8''%C3%A4.txt",
		"title*0=a", "title*1=b", "title*0*=us-ascii'en'x%20", "title*1=\"y z\"", "title*3=q", "x*=y", "p**=v",
		"format=flowed", "broken", "=v", "k=", "k=\"unterminated", "q=\"a\\\"b\"", "e==?utf-8?q?x?=", "z=1 (c)",
		"filename=\"f.pdf\"", "size=12", "FILENAME*0*=utf-8''a", "filename*1=%", "ä=ö", "boundary=\"inner\""}
	otherHeaders = []string{"Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: 8BIT",
		"Content-Transfer-Encoding: bogus value", "Content-ID: <id@x.test>", "Content-Description: d\n more",
		"Content-MD5: abc", "Content-Language: en, de", "Content-Language: ,x", "Content-Location: loc",
		"MIME-Version: 1.0", "X-Header: value", "no colon", "Date: Mon, 1 Jan 2024 00:00:00 +0000",
		"Message-ID: <m@x.test>", "In-Reply-To:\n <r@x.test>", "Subject:", "Subject:   ", "References: <a@b>",
		"Content-Disposition: inline", "Content-Disposition: attachment; filename=a.txt", "Content-Disposition: ;x=y"}
)

func (g *messageGenerator) pick(list []string) string { return list[g.r.IntN(len(list))] }

func (g *messageGenerator) text(fragments []string, n int) string {
	var b strings.Builder
	for range g.r.IntN(n + 1) {
		b.WriteString(g.pick(fragments))
	}
	return b.String()
}

func (g *messageGenerator) contentType(multipart bool, boundary string) string {
	ct := g.pick(typeFragments)
	if multipart {
		ct = "multipart/" + g.pick([]string{"mixed", "alternative", "digest", "signed", "related", "MIXED"})
	}
	var b strings.Builder
	b.WriteString("Content-Type: " + ct)
	for range g.r.IntN(4) {
		b.WriteString(g.pick([]string{"; ", ";", ";\n ", " ; ", ";;"}) + g.pick(paramFragments))
	}
	if multipart && boundary != "" {
		b.WriteString(g.pick([]string{"; boundary=", "; boundary=", "; BOUNDARY=", ";\n\tboundary*0=", "; boundary*="}))
		b.WriteString(g.pick([]string{boundary, "\"" + boundary + "\"", "\"" + boundary}))
	}
	return b.String()
}

// entity returns a header and body at the given nesting depth.
func (g *messageGenerator) entity(depth int, top bool) string {
	var hdr []string
	if top {
		for range g.r.IntN(6) {
			name := g.pick([]string{"From", "To", "Cc", "Bcc", "Sender", "Reply-To", "from", "TO"})
			var addrs []string
			for range g.r.IntN(4) {
				addrs = append(addrs, g.pick(addressFragments))
			}
			hdr = append(hdr, name+": "+strings.Join(addrs, g.pick([]string{", ", ",", " ", ",\n ", ""})))
		}
		for range g.r.IntN(3) {
			hdr = append(hdr, g.pick([]string{"Subject", "Date", "Message-ID", "In-Reply-To"})+":"+g.text(textFragments, 8))
		}
	}
	for range g.r.IntN(4) {
		hdr = append(hdr, g.pick(otherHeaders))
	}
	multipart := depth < 6 && g.r.IntN(3) == 0
	rfc822 := !multipart && depth < 6 && g.r.IntN(8) == 0
	boundary := ""
	switch {
	case multipart:
		boundary = g.pick([]string{"b", "bb", "b-", "=_x", "outer", "b" + fmt.Sprint(depth), "same"})
		if g.r.IntN(6) > 0 {
			hdr = append(hdr, g.contentType(true, boundary))
		} else {
			hdr = append(hdr, g.contentType(true, ""))
		}
	case rfc822:
		hdr = append(hdr, "Content-Type: message/rfc822")
	case g.r.IntN(3) > 0:
		hdr = append(hdr, g.contentType(false, ""))
	}
	g.r.Shuffle(len(hdr), func(i, j int) { hdr[i], hdr[j] = hdr[j], hdr[i] })
	var b strings.Builder
	for _, h := range hdr {
		b.WriteString(h + "\n")
	}
	if g.r.IntN(10) > 0 {
		b.WriteString("\n")
	}
	switch {
	case multipart:
		g.boundaries = append(g.boundaries, boundary)
		b.WriteString(g.body(3))
		for range g.r.IntN(4) {
			b.WriteString("--" + boundary + g.pick([]string{"", "", " ", "  junk", "-"}) + "\n")
			b.WriteString(g.entity(depth+1, false))
		}
		if g.r.IntN(4) > 0 {
			b.WriteString("--" + boundary + "--" + g.pick([]string{"", "\n", "\n\n", "x\n"}))
			b.WriteString(g.body(2))
		}
		g.boundaries = g.boundaries[:len(g.boundaries)-1]
	case rfc822:
		b.WriteString(g.entity(depth+1, true))
	default:
		b.WriteString(g.body(4))
	}
	return b.String()
}

// body returns up to n lines of body text, which may contain boundary-like lines.
func (g *messageGenerator) body(n int) string {
	var b strings.Builder
	for range g.r.IntN(n + 1) {
		switch g.r.IntN(8) {
		case 0:
			b.WriteString("\n")
		case 1:
			if len(g.boundaries) > 0 {
				b.WriteString("--" + g.pick(g.boundaries) + "x\n")
				continue
			}
			b.WriteString("--\n")
		case 2:
			b.WriteString("line with ü\n")
		default:
			b.WriteString(g.text(textFragments, 5) + "\n")
		}
	}
	return b.String()
}

// mutationBytes are what mutate inserts: the octets the parsers treat specially.
var mutationBytes = []byte("\r\n\t \"\\()<>@,;:.[]=*'%/-?\x00\xc3\xa4")

// mutate damages a corpus message with a few random insertions, deletions and replacements.
func (g *messageGenerator) mutate() string {
	m := []byte(corpus[g.r.IntN(len(corpus))].text)
	for range 1 + g.r.IntN(6) {
		i := g.r.IntN(len(m) + 1)
		c := mutationBytes[g.r.IntN(len(mutationBytes))]
		switch g.r.IntN(3) {
		case 0:
			m = append(m[:i], append([]byte{c}, m[i:]...)...)
		case 1:
			if i < len(m) {
				m = append(m[:i], m[i+1:]...)
			}
		default:
			if i < len(m) {
				m[i] = c
			}
		}
	}
	return string(m)
}

// message returns a random or mutated message with CRLF, LF or mixed line endings.
func (g *messageGenerator) message() []byte {
	var m string
	if g.r.IntN(2) == 0 {
		m = g.entity(0, true)
	} else {
		m = g.mutate()
	}
	switch g.r.IntN(4) {
	case 0:
	case 1:
		var b strings.Builder
		for _, c := range m {
			if c == '\n' && g.r.IntN(2) == 0 {
				b.WriteByte('\r')
			}
			b.WriteRune(c)
		}
		m = b.String()
	default:
		m = strings.ReplaceAll(m, "\n", "\r\n")
	}
	if m == "" {
		m = "\r\n"
	}
	return []byte(m)
}
