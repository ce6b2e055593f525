package decrypt

import "testing"

const searchMsg = "From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\n" +
	"Subject: Quarterly numbers\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"b1\"\r\n" +
	"\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain; charset=iso-8859-1\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Gr=FC=DFe aus M=FCnchen, the secret word is Pineapple.\r\n" +
	"--b1\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"PHA+SGlkZGVuIGluIGJhc2U2NDwvcD4=\r\n" +
	"--b1\r\n" +
	"Content-Type: application/octet-stream; name=blob.bin\r\n" +
	"\r\n" +
	"binaryneedle\r\n" +
	"--b1\r\n" +
	"Content-Type: message/rfc822\r\n" +
	"\r\n" +
	"Subject: Forwarded inner\r\n" +
	"\r\n" +
	"inner body text\r\n" +
	"--b1--\r\n"

func TestMatchText(t *testing.T) {
	cases := []struct {
		needle    string
		headerToo bool
		want      bool
	}{
		{"pineapple", false, true},         // case-insensitive, quoted-printable
		{"grüße aus münchen", false, true}, // charset converted
		{"hidden in BASE64", false, true},  // base64 text/html
		{"binaryneedle", false, false},     // not a text part
		{"quarterly", false, false},        // header only with TEXT
		{"quarterly", true, true},          // SEARCH TEXT includes the header
		{"jürgen", true, true},             // RFC 2047 encoded word decoded
		{"inner body", false, true},        // attached message body
		{"forwarded inner", true, true},    // attached message header
		{"not there", true, false},
		{"", false, true},
	}
	for _, c := range cases {
		if got := MatchText([]byte(searchMsg), c.needle, c.headerToo); got != c.want {
			t.Errorf("MatchText(%q, headerToo=%v) = %v, want %v", c.needle, c.headerToo, got, c.want)
		}
	}
}

func TestMatchTextPlainAndBroken(t *testing.T) {
	if !MatchText([]byte("Subject: x\n\nLF only body\n"), "only", false) {
		t.Error("LF message body not matched")
	}
	// Without an empty line, everything is header (mimepart's one rule, as for BODY[HEADER] and the status
	// field): TEXT finds it, BODY does not.
	if !MatchText([]byte("\x00garbage needle"), "NEEDLE", true) || MatchText([]byte("\x00garbage needle"), "NEEDLE", false) {
		t.Error("a message without an empty line is not all header")
	}
	if MatchText([]byte("Content-Type: multipart/mixed\r\n\r\nneedle"), "needle", false) {
		t.Error("multipart without boundary matched")
	}
}
