package imapfmt

import (
	"fmt"
	"strings"
)

// corpusMessage is a test message. Its text is written with LF line endings for readability; crlf turns it
// into the CRLF form the proxy passes, raw keeps it byte for byte.
type corpusMessage struct {
	name string
	text string
	raw  bool
}

// bytes returns the message as it is APPENDed.
func (m corpusMessage) bytes() []byte {
	if m.raw {
		return []byte(m.text)
	}
	return []byte(strings.ReplaceAll(m.text, "\n", "\r\n"))
}

// nestedMultiparts returns a message of depth nested multipart/mixed parts, each holding the next one, with
// a text part at the bottom and all close-delimiters. No boundary is a prefix of another.
func nestedMultiparts(depth int) string {
	var b strings.Builder
	b.WriteString("Subject: nested\nMIME-Version: 1.0\n")
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b%05d\"\n\n--b%05d\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\n\ndeepest\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%05d--\n", i)
	}
	return b.String()
}

// nestedMessages returns depth message/rfc822 parts nested in each other.
func nestedMessages(depth int) string {
	var b strings.Builder
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&b, "Subject: level %d\nContent-Type: message/rfc822\n\n", i)
	}
	b.WriteString("Subject: innermost\n\nbody\n")
	return b.String()
}

// corpus is the set of messages compared with Dovecot: ordinary mail, every header and MIME feature
// BODYSTRUCTURE shows, and malformed input.
var corpus = []corpusMessage{
	{name: "plain", text: `Date: Tue, 3 Feb 2026 10:11:12 +0100
From: Alice Example <alice@example.org>
Sender: Secretary <sec@example.org>
Reply-To: replies@example.org
To: Bob <bob@example.net>, carol@example.net
Cc: dave@example.com
Bcc: eve@example.com
Subject: Hello there
Message-ID: <m1@example.org>
In-Reply-To: <m0@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello Bob,
how are you?
`},
	{name: "no-headers", text: "\nonly a body\n"},
	{name: "minimal-from-only", text: "From: x@example.org\n\nbody"},
	{name: "header-only-no-body", text: "Subject: no body\nFrom: a@b.example"},
	{name: "plain-7bit-canonical", text: "Subject: canonical\nContent-Type: TEXT/Plain; CHARSET=US-ASCII\nContent-Transfer-Encoding: 7BIT\n\nbody\n"},
	{name: "plain-no-content-type", text: "Subject: default type\n\nline 1\nline 2\n"},
	{name: "encoded-words", text: `From: =?UTF-8?B?SsO2cmc=?= <joerg@example.de>
To: "=?ISO-8859-1?Q?Andr=E9?= Pirard" <PIRARD@vm1.ulg.ac.be>
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?UTF-8?Q?_aus_Berlin?=

x
`},
	{name: "groups", text: `From: a@example.org
To: A Group: Ed Jones <c@a.test>, joe@where.test, John <jdoe@one.test>;, solo@x.test
Cc: Empty Group:;
Bcc: undisclosed-recipients:;

x
`},
	{name: "group-unterminated", text: "From: a@example.org\nTo: team: a@x.test, b@y.test\n\nx\n"},
	{name: "source-route", text: "From: Route <@relay1.test,@relay2.test:user@final.test>\nTo: <@a.test:b@c.test>, <@bad.test user@x.test>\n\nx\n"},
	{name: "quoted-local-part", text: "From: \"john doe\"@example.org\nTo: \"a\\\"b\"@example.org, \"with,comma\" <x@y.test>\nCc: \"Last, First\" <first.last@example.org>\n\nx\n"},
	{name: "obsolete-syntax", text: `From: John . Doe <jdoe@machine . example>
Sender: Mary Smith <@machine.tld:mary@example.net>
To: a . b @ c . d, .dotstart@x.test, dots..in..middle@x.test, trailing.@x.test
Cc: Pete(A nice \) chap) <pete(his account)@silly.test(his host)>
Reply-To: jdoe@example.org (John Doe)

x
`},
	{name: "multiple-from", text: "From: first@example.org\nFrom: Second <second@example.org>\nTo: a@b.test\nTo: c@d.test\n\nx\n"},
	{name: "multiple-subject-date", text: "Subject: first\nSubject: second\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nDate: Tue, 2 Jan 2024 00:00:00 +0000\nMessage-ID: <a@x>\nMessage-ID: <b@x>\n\nx\n"},
	{name: "ids-and-date-verbatim", text: "Date:   Fri, 21 Nov 1997 09:55:06 -0600 (CST)\nMessage-ID:\n <folded@id.test>\nIn-Reply-To: <a@x.test> <b@y.test>\n (comment)\nReferences: <a@x.test>\n\nx\n"},
	{name: "empty-subject", text: "Subject:\nFrom: a@b.test\n\nx\n"},
	{name: "spaces-subject", text: "Subject:    \nFrom: a@b.test\n\nx\n"},
	{name: "subject-whitespace-runs", text: "Subject: a  b\t c   \nFrom: a@b.test\n\nx\n"},
	{name: "subject-quotes", text: "Subject: say \"hi\" \\ there\nMessage-ID: <\"a\"\"b\"\"c\"@x>\nIn-Reply-To: <\"\"\"\"\"@x>\n\nx\n"},
	{name: "eight-bit-headers", text: "From: Jörg Müller <joerg@example.de>\nTo: \"Zoë\" <zoe@example.fr>\nSubject: Grüße aus Köln\nContent-Type: text/plain; charset=utf-8; name=\"Grüße.txt\"\nContent-Description: Beschreibung ä\n\nÄÖÜ\n"},
	{name: "long-folded-headers", text: "From: a@b.test\nTo: " + strings.Repeat("Some Body <somebody@example.org>,\n ", 60) + "last@example.org\nSubject:" + strings.Repeat(" word", 300) + "\n\t and a tab continuation\n\nx\n"},
	{name: "very-long-header-line", text: "From: a@b.test\nSubject: " + strings.Repeat("long ", 2500) + "end\nX-Long: " + strings.Repeat("y", 12000) + "\n\n" + strings.Repeat("z", 20000) + "\n"},
	{name: "comments-in-addresses", text: "From: (leading comment) a@b.test (trailing comment)\nTo: c@d.test (Name (nested)), (only comment) e@f.test\nCc: \"quoted\" (comment) <g@h.test>\n\nx\n"},
	{name: "address-errors", text: "From: John Doe\nTo: ,,, <>, a@, @b.test, \"unterminated\nCc: <a@b.test\nBcc: x@y.test, (unterminated comment\nReply-To: <no-domain>\nSender: Some: thing\n\nx\n"},
	{name: "domain-literal", text: "From: user@[192.168.0.1]\nTo: x@[IPv6:2001:db8::1], y@[bad[literal]\n\nx\n"},
	{name: "header-oddities", text: "Subject : spaced name\nno colon line\nX-Empty:\nFrom:a@b.test\nTo:\tc@d.test\n\nx\n"},
	{name: "multipart-mixed-attachment", text: `From: a@b.test
Subject: attachment
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="----=_Part_1"

This is a multi-part message in MIME format.

------=_Part_1
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

See attachment=2E
------=_Part_1
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"; size=1234
Content-Transfer-Encoding: BASE64
Content-ID: <part2@b.test>
Content-Description: The report
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==
Content-Language: en, de-AT
Content-Location: http://example.org/report.pdf

JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29k
ZT4+CnN0cmVhbQp4nCvkcgrhMlAwtTTVszRUsDAwUUjO5dJ3UTBSSC8u0E8=
------=_Part_1--

epilogue text
`},
	{name: "multipart-alternative", text: `From: a@b.test
Content-Type: multipart/alternative; boundary=alt

--alt
Content-Type: text/plain; charset=utf-8; format=flowed; delsp=yes

plain text
--alt
Content-Type: text/html; charset=utf-8

<html><body>html</body></html>

--alt--
`},
	{name: "multipart-signed-nested", text: `From: a@b.test
MIME-Version: 1.0
Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="sig"

--sig
Content-Type: multipart/mixed; boundary="mix"

--mix
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain

text
--alt
Content-Type: multipart/related; boundary="rel"; type="text/html"

--rel
Content-Type: text/html

<img src="cid:img">
--rel
Content-Type: image/png
Content-ID: <img>
Content-Disposition: inline

iVBORw0KGgo=
--rel--
--alt--
--mix
Content-Type: application/octet-stream
Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.txt

data
--mix--
--sig
Content-Type: application/pkcs7-signature; name="smime.p7s"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="smime.p7s"

MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAKCAMIIE
--sig--
`},
	{name: "message-rfc822-in-multipart", text: `From: a@b.test
Subject: fwd
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: text/plain

see below
--outer
Content-Type: message/rfc822; name="fwd.eml"
Content-Disposition: inline

Date: Mon, 2 Feb 2026 08:00:00 +0000
From: Inner Sender <inner@example.org>
To: someone@example.org
Subject: inner subject
Message-ID: <inner@example.org>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

inner text
--inner
Content-Type: text/html

<p>inner</p>
--inner--

--outer--
`},
	{name: "message-rfc822-top", text: "From: a@b.test\nContent-Type: MESSAGE/RFC822\n\nFrom: inner@b.test\nSubject: inner\n\ninner body\nline 2\n"},
	{name: "message-rfc822-empty", text: "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\n--b--\n"},
	{name: "message-rfc822-header-only", text: "Content-Type: message/rfc822\n\nSubject: no body inside"},
	{name: "rfc2231-parameters", text: `From: a@b.test
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: application/x-stuff;
 title*0*=us-ascii'en'This%20is%20even%20more%20;
 title*1*=%2A%2A%2Afun%2A%2A%2A%20;
 title*2="isn't it!"
Content-Disposition: attachment;
 filename*0="long";
 filename*1="name.txt"

x
--b
Content-Type: text/plain; name*=iso-8859-1'de'%E4pfel; name*1="x"
Content-Disposition: attachment; filename*0=a; filename*2=c; foo*=bar; baz*=qux

x
--b
Content-Type: text/plain; charset*=utf-8''utf-8; p*0=100%; p*1*=%25
Content-Disposition: attachment; a*3=x; b*=y; c**=z; d*0x=w

x
--b--
`},
	{name: "parameter-syntax", text: `Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain (comment) ; charset="utf-8" (c2); format = flowed ;; broken ; x="a\"b;c" ; y=
Content-Disposition: ; filename=x

x
--b
Content-Type: text/plain; name==?utf-8?b?w6Q=?= ; other=1; bad param=2; z=3

x
--b
Content-Type: application/octet-stream; name="unterminated
Content-Disposition: inline
Content-Disposition: attachment; filename=second

x
--b--
`},
	{name: "content-type-garbage", text: "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: garbage\n\n1\n--b\nContent-Type: text\n\n2\n--b\nContent-Type: multipart\n\n3\n--b\nContent-Type: ;charset=x\n\n4\n--b\nContent-Type: text/plain garbage\n\n5\n--b\nContent-Type: \n\n6\n--b\nContent-Type: text/ ; a=b\n\n7\n--b--\n"},
	{name: "no-mime-version-content-fields", text: "Subject: x\nContent-Description: ignored without MIME\nContent-ID: <ignored@x>\nContent-Disposition: attachment\n\nbody\n"},
	{name: "mime-version-content-fields", text: "Subject: x\nMIME-Version: 1.0\nContent-Description: kept\nContent-ID: <kept@x>\nContent-Language: fr\nContent-Location: here\nContent-MD5: abc\n\nbody\n"},
	{name: "content-type-without-mime-version", text: "Subject: x\nContent-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n<p>=E4</p>\n"},
	{name: "transfer-encoding-variants", text: "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: BASE64\n\nYQ==\n--b\nContent-Transfer-Encoding: base64 garbage\n\nx\n--b\nContent-Transfer-Encoding: x-uuencode (comment)\n\nx\n--b\nContent-Transfer-Encoding:\n\nx\n--b--\n"},
	{name: "multipart-without-boundary", text: "Subject: x\nContent-Type: multipart/mixed\n\n--b\nContent-Type: text/plain\n\nx\n--b--\n"},
	{name: "multipart-boundary-absent", text: "Subject: x\nContent-Type: multipart/mixed; boundary=nothere\n\nno parts at all\n"},
	{name: "multipart-unterminated", text: "Subject: x\nContent-Type: multipart/mixed; boundary=b\n\npreamble\n--b\nContent-Type: text/plain\n\nfirst\n--b\nContent-Type: text/html\n\n<p>never closed</p>\n"},
	{name: "multipart-ends-at-delimiter", text: "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b"},
	{name: "part-without-header", text: "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nno header here\n--b\nContent-Type: text/plain\n--b\n--b\n\n--b--\n"},
	{name: "boundary-line-garbage", text: "Content-Type: multipart/mixed; boundary=b\n\n--b   trailing\nContent-Type: text/plain\n\nx\n--b-- and more\nepilogue\n--b\nnot a part anymore\n"},
	{name: "prefix-sharing-boundaries", text: `Content-Type: multipart/mixed; boundary=b

--b
Content-Type: multipart/alternative; boundary=b2

--b2
Content-Type: text/plain

inner
--b2--
--b
Content-Type: multipart/mixed; boundary="foo--"

--foo--
Content-Type: text/plain

foo part
--foo----
--b--
`},
	{name: "nested-parts-same-boundary", text: "Content-Type: multipart/mixed; boundary=same\n\n--same\nContent-Type: multipart/mixed; boundary=same\n\n--same\nContent-Type: text/plain\n\nx\n--same--\n--same--\n"},
	{name: "multipart-digest", text: `Content-Type: multipart/digest; boundary=d

--d

From: one@x.test
Subject: one

first
--d
Content-Type: text/plain

not a message
--d

Subject: two

second
--d--
`},
	{name: "deep-multipart-nesting", text: nestedMultiparts(120)},
	{name: "deep-message-nesting", text: nestedMessages(110)},
	{name: "lone-cr-and-crcrlf", raw: true, text: "Subject: a\r\rb\r\nX: y\rz\r\n\r\nline1\r\r\nline2\rx\r\n\r\n"},
	{name: "lf-only-message", raw: true, text: "Subject: lf\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\n"},
	{name: "mixed-line-endings", raw: true, text: "Subject: mixed\r\nContent-Type: multipart/mixed; boundary=b\n\r\n--b\r\nContent-Type: text/plain\n\nx\r\ny\n--b--\r\n"},
	{name: "no-final-newline", text: "Subject: x\nContent-Type: text/plain; charset=utf-8\n\nno newline at end"},
	{name: "tabs-in-headers", text: "Subject:\tfirst\ttab\nFrom:\t\"Tab\tName\" <t@x.test>\nDate:\tMon,\n\t1 Jan 2024\n\n\tbody\n"},
	{name: "disposition-inline-then-attachment", text: "MIME-Version: 1.0\nContent-Disposition: inline\nContent-Disposition: attachment; filename=a.txt\nContent-Type: text/plain\n\nx\n"},
	{name: "language-variants", text: "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Language: en-US , de;q=1\n\nx\n--b\nContent-Language: (comment) i-klingon\n\nx\n--b\nContent-Language: ,\nContent-Language: fr\n\nx\n--b--\n"},
	{name: "folded-content-fields", text: "MIME-Version: 1.0\nContent-Type: text/plain;\n\tcharset=\"utf-8\";\n format=flowed\nContent-ID:\n <id@x.test>\nContent-Description: multi\n line\n  description\n\nx\n"},
	{name: "multipart-preamble-epilogue-sizes", text: "Content-Type: multipart/mixed; boundary=\"=_x\"\n\n\n\npreamble\n\n--=_x\nContent-Type: text/plain\n\n\n\nblank lines\n\n\n--=_x--\n\n\nepilogue\n\n"},
	{name: "message-rfc822-8bit-inner", text: "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nSubject: Grüße\nFrom: \"Jörg\" <j@x.test>\nContent-Type: text/plain; charset=utf-8\n\nÄ\n--b--\n"},
	{name: "single-space-continuation-lines", text: "From: N \"abc\n def\n \nTo: x@y.test\n\t\nSubject: a\n \n b\n  \nMessage-ID: <a>\n \n\nx\n"},
	{name: "too-many-parameters", text: "Content-Type: text/plain" + strings.Repeat("; p=v", 130) + "\nContent-Disposition: attachment" + strings.Repeat("; x", 100) + "; name=late\n\nx\n"},
	{name: "many-addresses-and-escapes", text: "To: \"a\\\\b\" <x@y.test>, \"q\\\"q\" <q@y.test>, \"back\\\\slash\\\\es\\\\\\\\\"@y.test\nFrom: \"Name with \\\"quotes\\\"\" <n@x.test>\n\nx\n"},
}
