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
// case) and random field lists, the fast HEADER.FIELDS and HEADER.FIELDS.NOT give exactly what go-imap's
// general extractor gives (which the end-to-end test compares with Dovecot); headers it does not take are
// left to the general extractor.
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
	fast := 0
	for i := range 3000 {
		var h strings.Builder
		for range rng.IntN(12) {
			h.WriteString(pick() + ": v" + strings.Repeat("x", rng.IntN(5)))
			for range rng.IntN(3) {
				h.WriteString("\r\n\t folded")
			}
			h.WriteString("\r\n")
		}
		switch rng.IntN(20) { // now and then something the fast path must refuse or handle
		case 0:
			h.WriteString("no colon here\r\n")
		case 1:
			h.WriteString("Bare: cr\rinside\r\n")
		case 2:
			h.WriteString("Spaced : name\r\n")
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
		got, ok := headerFields(msg, sec)
		if !ok {
			continue
		}
		fast++
		if want := imapserver.ExtractBodySection(bytes.NewReader(msg), sec); !bytes.Equal(got, want) {
			t.Fatalf("case %d: %+v of\n%q\nfast:    %q\ngeneral: %q", i, sec, msg, got, want)
		}
	}
	if fast < 2000 {
		t.Errorf("the fast path took only %d of 3000 plain headers", fast)
	}
}
