package mimepart_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/imapfmt"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// genMessage writes a random well-formed message: multiparts (mixed, alternative, digest), message/rfc822
// parts, leaves with and without Content-Type, preambles and epilogues, a missing close delimiter now and
// then, CRLF or LF line ends. Boundaries are distinct and none is a prefix of another.
func genMessage(rng *rand.Rand, b *strings.Builder, depth int, eol string, inDigest bool, next *int) {
	kind := rng.IntN(5)
	if depth > 4 {
		kind = 0
	}
	switch kind {
	case 0, 1: // leaf
		if !inDigest || rng.IntN(2) == 0 {
			fmt.Fprintf(b, "Content-Type: text/plain%s", eol)
		}
		fmt.Fprintf(b, "X-Leaf: %d%s%sline one%sline two", *next, eol, eol, eol)
		if inDigest {
			// a digest part without Content-Type is a message: give it a header and body
			fmt.Fprintf(b, "%s", eol)
		}
	case 2, 3: // multipart
		*next++
		bd := fmt.Sprintf("b%03d=_", *next)
		sub := []string{"mixed", "alternative", "digest"}[rng.IntN(3)]
		fmt.Fprintf(b, "Content-Type: multipart/%s; boundary=\"%s\"%s%s", sub, bd, eol, eol)
		if rng.IntN(2) == 0 {
			fmt.Fprintf(b, "preamble%s", eol)
		}
		for range 1 + rng.IntN(3) {
			fmt.Fprintf(b, "--%s%s", bd, eol)
			genMessage(rng, b, depth+1, eol, sub == "digest", next)
			b.WriteString(eol)
		}
		if rng.IntN(6) != 0 {
			fmt.Fprintf(b, "--%s--%s", bd, eol)
			if rng.IntN(2) == 0 {
				fmt.Fprintf(b, "epilogue%s", eol)
			}
		}
	case 4: // message/rfc822
		fmt.Fprintf(b, "Content-Type: message/rfc822%s%sSubject: inner%s", eol, eol, eol)
		genMessage(rng, b, depth+1, eol, false, next)
	}
}

// paths lists the part paths to probe below p (reached by prefix): each child, and one past the last.
func paths(root, p *mimepart.Part, prefix []int, out *[][]int) {
	m := p
	if !p.Multipart && p.Message != nil && prefix != nil {
		m = p.Message
	}
	n := 1
	if m.Multipart {
		n = len(m.Parts)
	}
	for i := 1; i <= n+1; i++ {
		q := append(append([]int(nil), prefix...), i)
		*out = append(*out, q)
		if c := root.Section(q); c != nil && len(q) < 8 && (c.Multipart || c.Message != nil) && c != p {
			paths(root, c, q, out)
		}
	}
}

// TestNumberingLikeDovecot: on well-formed messages, the tree numbers parts exactly as internal/imapfmt (a
// port of Dovecot's parser, whose numbering BODYSTRUCTURE shows) does. On malformed ones they can differ:
// Dovecot takes any line starting with "--" and a boundary as a delimiter (the rest of the line ignored), picks
// the longest of nested boundaries one is a prefix of, and takes an empty boundary parameter; mimepart wants a
// delimiter line as RFC 2046 section 5.1.1 writes it and no part without a boundary. proxy/binary.go serves a
// section only when both see the part.
func TestNumberingLikeDovecot(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 14))
	deep := 0 // parts at depth 3 or more that exist
	for i := range 2000 {
		var b strings.Builder
		eol := "\r\n"
		if i%3 == 0 {
			eol = "\n"
		}
		next := 0
		b.WriteString("From: a@example.com" + eol + "MIME-Version: 1.0" + eol)
		genMessage(rng, &b, 0, eol, false, &next)
		msg := []byte(b.String())
		root := mimepart.Parse(msg)
		st := imapfmt.Parse(msg)
		var ps [][]int
		paths(root, root, nil, &ps)
		for _, p := range ps {
			got, want := root.Section(p) != nil, st.PartExists(p)
			if got != want {
				t.Fatalf("message %d, part %v: mimepart %v, imapfmt (Dovecot) %v\n%s", i, p, got, want, msg)
			}
			if got && len(p) >= 3 {
				deep++
			}
		}
	}
	if deep < 1000 {
		t.Errorf("only %d existing parts at depth 3 or more were probed", deep)
	}
}
