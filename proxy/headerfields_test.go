package proxy

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// TestHeaderFieldsAgreesWithExtractor: for random plain headers (folded fields, repeated fields, names in any
// case) and random field lists, HEADER.FIELDS and HEADER.FIELDS.NOT cut from internal/mimepart give exactly
// what go-imap's extractor gives (which the end-to-end test compares with Dovecot). Headers that are not plain
// (a line without a colon, a bare CR, a space before the colon) are where readers disagree; mimepart's rule
// decides them (TestSectionsOfAdversarialHeaders).
func TestHeaderFieldsAgreesWithExtractor(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"From", "To", "Cc", "Subject", "Date", "Message-ID", "References", "X-Priority", "Content-Type", "Received", "X-A"}
	pick := func() string {
		n := names[rng.IntN(len(names))]
		switch rng.IntN(3) {
		case 0:
			return strings.ToLower(n)
		case 1:
			return strings.ToUpper(n)
		}
		return n
	}
	for i := range 3000 {
		var h strings.Builder
		for range rng.IntN(12) {
			h.WriteString(pick() + ": v" + strings.Repeat("x", rng.IntN(5)))
			for range rng.IntN(3) {
				h.WriteString("\r\n\t folded")
			}
			h.WriteString("\r\n")
		}
		msg := []byte(h.String() + "\r\nbody line\r\n")
		var list []string
		for range 1 + rng.IntN(4) {
			list = append(list, pick())
		}
		sec := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: list}
		if rng.IntN(2) == 0 {
			sec = &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: list}
		}
		got := bodySection(msg, nil, nil, sec)
		if want := imapserver.ExtractBodySection(bytes.NewReader(msg), sec); !bytes.Equal(got, want) {
			t.Fatalf("case %d: %+v of\n%q\nmimepart: %q\ngo-imap:  %q", i, sec, msg, got, want)
		}
	}
}
