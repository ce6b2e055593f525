package imapfmt

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestAppendString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"", `""`},
		{"plain text", `"plain text"`},
		{`a "b" \c\`, `"a \"b\" \\c\\"`},
		{`""""`, `"\"\"\"\""`},
		{`"""""`, "{5}\r\n\"\"\"\"\""},
		{"Grüße", "{7}\r\nGrüße"},
		{"two\r\nlines", "{10}\r\ntwo\r\nlines"},
		{"lf\n", "{3}\r\nlf\n"},
		{"nul\x00", "{4}\r\nnul\x00"},
	} {
		if got := string(AppendString([]byte("x "), []byte(tc.in))); got != "x "+tc.want {
			t.Errorf("AppendString(%q) = %q, want %q", tc.in, got, "x "+tc.want)
		}
	}
	if got := string(AppendNString(nil, nil)); got != "NIL" {
		t.Errorf("AppendNString(nil) = %q, want NIL", got)
	}
	if got := string(AppendNString(nil, []byte{})); got != `""` {
		t.Errorf(`AppendNString("") = %q, want ""`, got)
	}
}

func TestAppendStringForHumans(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"", `""`},
		{"Hello world", `"Hello world"`},
		{"   ", `""`},
		{"a  b", "{3}\r\na b"},
		{" a\tb \n", "{3}\r\na b"},
		{"folded\n subject", "{14}\r\nfolded subject"},
		{`say "hi"`, "{8}\r\nsay \"hi\""},
		{"nul\x00", "{4}\r\nnul\x80"},
		{"Grüße", "{7}\r\nGrüße"},
	} {
		if got := string(appendStringForHumans(nil, tc.in)); got != tc.want {
			t.Errorf("appendStringForHumans(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestAppendNStringNoLF(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"<a@b>", `"<a@b>"`},
		{"\n <folded@id>", `" <folded@id>"`},
		{"<a>\n<b>", `"<a> <b>"`},
		{"<a>\r\n\t<b>", "\"<a>\t<b>\""},
		{"x\n", `"x"`},
	} {
		if got := string(appendNStringNoLF(nil, &tc.in)); got != tc.want {
			t.Errorf("appendNStringNoLF(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStoredForm(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a\nb\n", "a\nb\n"},
		{"a\r\nb\r\n", "a\nb\n"},
		{"a\rb\r\r\nc\r", "a\rb\r\nc"},
	} {
		if got := string(storedForm([]byte(tc.in))); got != tc.want {
			t.Errorf("storedForm(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestGolden checks values that Dovecot 2.3.19 sends (recorded from TestMatchesDovecot), so that regressions
// show without a Dovecot to compare with.
func TestGolden(t *testing.T) {
	byName := map[string]corpusMessage{}
	for _, m := range corpus {
		byName[m.name] = m
	}
	for _, tc := range []struct {
		name, item, want string
	}{
		{"groups", "ENVELOPE", `(NIL NIL ((NIL NIL "a" "example.org")) ((NIL NIL "a" "example.org")) ((NIL NIL "a" "example.org")) ((NIL NIL "A Group" NIL)("Ed Jones" NIL "c" "a.test")(NIL NIL "joe" "where.test")("John" NIL "jdoe" "one.test")(NIL NIL NIL NIL)(NIL NIL "solo" "x.test")) ((NIL NIL "Empty Group" NIL)(NIL NIL NIL NIL)) ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL)`},
		{"source-route", "ENVELOPE", `(NIL NIL (("Route" "@relay1.test,@relay2.test" "user" "final.test")) (("Route" "@relay1.test,@relay2.test" "user" "final.test")) (("Route" "@relay1.test,@relay2.test" "user" "final.test")) ((NIL "@a.test" "b" "c.test")(NIL "INVALID_ROUTE" "user" "x.test")) NIL NIL NIL NIL)`},
		{"obsolete-syntax", "ENVELOPE", "(NIL NIL ((\"John . Doe\" NIL \"jdoe\" \"machine.example\")) ((\"Mary Smith\" \"@machine.tld\" \"mary\" \"example.net\")) ((\"John Doe\" NIL \"jdoe\" \"example.org\")) (({4}\r\na. b NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) ((\"Pete\" NIL \"pete\" \"silly.test\")) NIL NIL NIL)"},
		{"spaces-subject", "ENVELOPE", `(NIL "" ((NIL NIL "a" "b.test")) ((NIL NIL "a" "b.test")) ((NIL NIL "a" "b.test")) NIL NIL NIL NIL NIL)`},
		{"plain-7bit-canonical", "BODYSTRUCTURE", `("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)`},
		{"message-rfc822-top", "BODY", `("message" "rfc822" NIL NIL NIL "7bit" 58 (NIL "inner" ((NIL NIL "inner" "b.test")) ((NIL NIL "inner" "b.test")) ((NIL NIL "inner" "b.test")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2) 5)`},
		{"rfc2231-parameters", "BODYSTRUCTURE", `(("application" "x-stuff" ("title*" "us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn't it!") NIL NIL "7bit" 1 NIL ("attachment" ("filename" "longname.txt")) NIL NIL)("text" "plain" ("name*" "iso-8859-1'de'%E4pfelx" "charset" "us-ascii") NIL NIL "7bit" 1 0 NIL ("attachment" ("baz*2*" "qux" "filename*0" "a" "filename*2" "c" "foo*2*" "bar")) NIL NIL)("text" "plain" ("charset*" "utf-8''utf-8" "p*" "''100%25%25" "charset" "us-ascii") NIL NIL "7bit" 1 0 NIL ("attachment" ("d*0x" "w" "a*3" "x" "b*3*" "y" "c*" "z")) NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)`},
		{"content-type-garbage", "BODY", `(("garbage" "" NIL NIL NIL "7bit" 1)("text" "" ("charset" "us-ascii") NIL NIL "7bit" 1 0)("application" "octet-stream" NIL NIL NIL "7bit" 1)("" "" NIL NIL NIL "7bit" 1)("" "" NIL NIL NIL "7bit" 1)("" "" NIL NIL NIL "7bit" 1)("" "" NIL NIL NIL "7bit" 1) "mixed")`},
		{"multipart-digest", "BODY", `(("message" "rfc822" NIL NIL NIL "7bit" 39 (NIL "one" ((NIL NIL "one" "x.test")) ((NIL NIL "one" "x.test")) ((NIL NIL "one" "x.test")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0) 3)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0)("message" "rfc822" NIL NIL NIL "7bit" 22 (NIL "two" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 0) 2) "digest")`},
		{"part-without-header", "BODYSTRUCTURE", `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)`},
	} {
		m, ok := byName[tc.name]
		if !ok {
			t.Fatalf("no corpus message %q", tc.name)
		}
		var got []byte
		switch tc.item {
		case "ENVELOPE":
			got = Envelope(m.bytes())
		case "BODY":
			got = BodyStructure(m.bytes(), false)
		default:
			got = BodyStructure(m.bytes(), true)
		}
		compare(t, tc.name, tc.item, got, []byte(tc.want))
	}
}

// TestLineEndings checks that a message gives the same values with CRLF and with LF line endings, as it does
// in Dovecot.
func TestLineEndings(t *testing.T) {
	for _, m := range corpus {
		crlf := m.bytes()
		lf := lfOnly(crlf)
		if !bytes.Equal(Envelope(crlf), Envelope(lf)) {
			t.Errorf("%s: ENVELOPE differs between CRLF and LF", m.name)
		}
		for _, ext := range []bool{false, true} {
			if !bytes.Equal(BodyStructure(crlf, ext), BodyStructure(lf, ext)) {
				t.Errorf("%s: BodyStructure(extended %v) differs between CRLF and LF", m.name, ext)
			}
		}
	}
}

// TestDeepNesting checks that hostile nesting is cut off at Dovecot's limit of 100 levels, costs little and
// produces well-formed values.
func TestDeepNesting(t *testing.T) {
	const depth = 20000
	for _, tc := range []struct {
		name string
		msg  string
		// level is what each of the 99 parsed levels contributes, leaf what the part at the limit becomes.
		level, leaf string
	}{
		{"multipart", nestedMultiparts(depth), `"mixed" ("boundary" "b`, `(("application" "octet-stream" ("boundary" "b00099")`},
		{"message/rfc822", nestedMessages(depth), `("message" "rfc822"`, `("application" "octet-stream" NIL NIL NIL "7bit" `},
	} {
		msg := []byte(strings.ReplaceAll(tc.msg, "\n", "\r\n"))
		start := time.Now()
		bs := BodyStructure(msg, true)
		body := BodyStructure(msg, false)
		env := Envelope(msg)
		if elapsed := time.Since(start); elapsed > raceSlowdown*time.Second {
			t.Errorf("%s nested %d deep: %v", tc.name, depth, elapsed)
		}
		if n := bytes.Count(bs, []byte(tc.level)); n != maxNestedParts-1 {
			t.Errorf("%s nested %d deep: %d parsed levels, want %d", tc.name, depth, n, maxNestedParts-1)
		}
		if !bytes.Contains(bs, []byte(tc.leaf)) {
			t.Errorf("%s nested %d deep: no %s at the limit in %.300q", tc.name, depth, tc.leaf, bs)
		}
		for _, v := range [][]byte{bs, body, env} {
			if err := checkValue(v); err != nil {
				t.Errorf("%s nested %d deep: %v", tc.name, depth, err)
			}
		}
	}
}

// checkValue verifies that v is one well-formed parenthesized IMAP value.
func checkValue(v []byte) error {
	if len(v) == 0 || v[0] != '(' {
		return fmt.Errorf("value does not start with '(': %.60q", v)
	}
	n, err := valueLength(v)
	if err != nil {
		return fmt.Errorf("%v in %.200q", err, v)
	}
	if n != len(v) {
		return fmt.Errorf("value ends at %d of %d: %.200q", n, len(v), v)
	}
	return nil
}

// FuzzBodyStructure checks that no input makes the functions panic or produce malformed or outsized values.
func FuzzBodyStructure(f *testing.F) {
	for _, m := range corpus {
		f.Add(m.bytes())
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		// The largest growth is an address list of commas: 43 octets of placeholders per comma, written
		// three times when the field is From.
		limit := 200*len(msg) + 1000
		env := Envelope(msg)
		// Envelope parses only the header; the full parse must agree.
		root := parseMIME(storedForm(msg))
		if full := append(root.data.envelope.appendTo([]byte{'('}), ')'); !bytes.Equal(env, full) {
			t.Fatalf("Envelope %q, from the full parse %q", env, full)
		}
		for _, v := range [][]byte{env, BodyStructure(msg, false), BodyStructure(msg, true)} {
			if len(v) > limit {
				t.Fatalf("%d octets out of %d in", len(v), len(msg))
			}
			if err := checkValue(v); err != nil {
				t.Fatal(err)
			}
		}
	})
}
