package rewriting

import (
	"bytes"
	"testing"
)

// TestMetaOfHeader: the stored header is the top-level header through the empty line that ends it, CRLF or LF,
// or the whole message when no line is empty.
func TestMetaOfHeader(t *testing.T) {
	for _, c := range []struct{ msg, header string }{
		{"Subject: a\r\nFrom: b\r\n\r\nbody\r\n\r\nmore\r\n", "Subject: a\r\nFrom: b\r\n\r\n"},
		{"Subject: a\n\nbody\n", "Subject: a\n\n"},
		{"\r\nbody", "\r\n"},
		{"\nbody", "\n"},
		{"Subject: a\r\n folded\r\n", "Subject: a\r\n folded\r\n"},
		{"", ""},
	} {
		m := MetaOf([]byte(c.msg))
		if !bytes.Equal(m.Header, []byte(c.header)) || m.Size != int64(len(c.msg)) {
			t.Errorf("MetaOf(%q) = header %q, size %d; want %q, %d", c.msg, m.Header, m.Size, c.header, len(c.msg))
		}
	}
	if m := MetaOf([]byte("Subject: x\r\n\r\nb\r\n")); len(m.Envelope) == 0 || len(m.BodyStructure) == 0 || len(m.Body) == 0 {
		t.Errorf("MetaOf left ENVELOPE, BODY or BODYSTRUCTURE empty: %+v", m)
	}
}
