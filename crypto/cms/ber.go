package cms

import "fmt"

// Limits against hostile input (see doc.go).
const (
	// MaxInputSize is the largest ContentInfo Parse, ContentType and SignedContent accept (ErrTooLarge).
	MaxInputSize = 1 << 30
	// MaxDepth is the deepest nesting of constructed BER/DER elements accepted (ErrTooLarge).
	MaxDepth = 32
	// maxElements bounds the number of constructed elements in one input (ErrTooLarge): it bounds the
	// bookkeeping of the BER to DER rewrite.
	maxElements = 1 << 20
)

// berConv rewrites BER (X.690 section 8) to the subset of DER this package parses with cryptobyte: definite,
// minimal lengths (X.690 section 10.1) and primitive OCTET STRINGs (section 10.2). It does not sort SET OF
// (section 11.6); callers hash only parts that RFC 5083 section 2.1 requires to be DER already.
//
// measure validates the input and finds out whether it needs rewriting at all (DER input does not, and then
// nothing is allocated); only then does a second measure pass record the DER content length of every
// constructed element in pre-order, into a table of exactly the counted size, and write emits the DER into
// one buffer of exactly the right size. The rewrite costs one copy plus 4 bytes per constructed element (at
// least 2 input bytes each), so its memory is at most three times the input's.
type berConv struct {
	in       []byte
	record   bool    // measure: append to lens (the second pass, for input that needs rewriting)
	lens     []int32 // DER content length of each constructed element, pre-order (MaxInputSize fits)
	elements int     // constructed elements seen by measure
	changed  bool    // some element is not already in the accepted DER form
	next     int     // write pass: index into lens
}

// header is one parsed BER identifier and length (X.690 sections 8.1.2, 8.1.3).
type header struct {
	tag        []byte // identifier octets as in the input
	class      byte   // top two bits of the first identifier octet
	number     int    // tag number
	compound   bool   // constructed bit (X.690 section 8.1.2.5)
	indefinite bool   // length octets 0x80 (section 8.1.3.6)
	length     int    // content length when definite
	hdrLen     int    // identifier plus length octets
	minimal    bool   // length is in the minimal definite form DER requires (section 10.1)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// parseHeader reads the identifier and length octets at in[off:], of an element that in holds whole.
func parseHeader(in []byte, off int) (header, error) {
	h, err := parseHeaderOpen(in, off)
	if err == nil && !h.indefinite && h.length > len(in)-off-h.hdrLen {
		return h, malformed("element at offset %d overruns its container", off)
	}
	return h, err
}

// parseHeaderOpen is parseHeader for an element whose contents may extend beyond in (a prefix of the input).
func parseHeaderOpen(in []byte, off int) (header, error) {
	var h header
	p := off
	if p >= len(in) {
		return h, malformed("truncated identifier at offset %d", off)
	}
	b := in[p]
	p++
	h.class = b & 0xc0
	h.compound = b&0x20 != 0
	h.number = int(b & 0x1f)
	if h.number == 0x1f { // high-tag-number form, X.690 section 8.1.2.4
		h.number = 0
		for i := 0; ; i++ {
			if p >= len(in) || i >= 4 {
				return h, malformed("bad tag at offset %d", off)
			}
			c := in[p]
			p++
			h.number = h.number<<7 | int(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
	}
	h.tag = in[off:p]
	if p >= len(in) {
		return h, malformed("truncated length at offset %d", off)
	}
	l := in[p]
	p++
	h.minimal = true
	switch {
	case l < 0x80:
		h.length = int(l)
	case l == 0x80:
		if !h.compound {
			return h, malformed("indefinite length on primitive element at offset %d", off)
		}
		h.indefinite = true
		h.minimal = false
	case l == 0xff:
		return h, malformed("reserved length octet at offset %d", off)
	default:
		n := int(l & 0x7f)
		if n > 4 {
			return h, fmt.Errorf("%w: length field of %d octets at offset %d", ErrTooLarge, n, off)
		}
		if p+n > len(in) {
			return h, malformed("truncated length at offset %d", off)
		}
		v := 0
		for i := 0; i < n; i++ {
			v = v<<8 | int(in[p+i])
		}
		p += n
		if v > MaxInputSize {
			return h, fmt.Errorf("%w: element of %d bytes", ErrTooLarge, v)
		}
		h.length = v
		// DER: long form only for lengths >= 128, with no leading zero octet (X.690 section 10.1).
		h.minimal = v >= 0x80 && in[p-n] != 0
	}
	h.hdrLen = p - off
	return h, nil
}

// isConstructedString reports whether h is a constructed universal string type, which DER forbids (X.690
// section 10.2) and the rewrite flattens.
func (h header) isConstructedString() bool {
	if h.class != 0 || !h.compound {
		return false
	}
	switch h.number {
	case 3: // BIT STRING: segmenting would need unused-bits handling; rejected in measure.
		return true
	case 4, 12, 18, 19, 20, 21, 22, 25, 26, 27, 28, 30: // OCTET STRING and the character string types
		return true
	}
	return false
}

// derLenLen is the number of length octets DER uses for a content length n.
func derLenLen(n int) int {
	switch {
	case n < 0x80:
		return 1
	case n < 0x100:
		return 2
	case n < 0x10000:
		return 3
	case n < 0x1000000:
		return 4
	}
	return 5
}

// measure parses the element at c.in[off:] and returns the offset just past it (past the end-of-contents
// octets when indefinite), the size of its DER encoding and the length of its DER contents.
func (c *berConv) measure(off, end, depth int) (next, derSize, contentLen int, err error) {
	if depth > MaxDepth {
		return 0, 0, 0, fmt.Errorf("%w: nesting deeper than %d", ErrTooLarge, MaxDepth)
	}
	h, err := parseHeader(c.in[:end], off)
	if err != nil {
		return 0, 0, 0, err
	}
	p := off + h.hdrLen
	if !h.minimal {
		c.changed = true
	}
	if !h.compound {
		return p + h.length, len(h.tag) + derLenLen(h.length) + h.length, h.length, nil
	}
	if c.elements >= maxElements {
		return 0, 0, 0, fmt.Errorf("%w: more than %d constructed elements", ErrTooLarge, maxElements)
	}
	c.elements++
	idx := len(c.lens)
	if c.record {
		c.lens = append(c.lens, 0)
	}
	flatten := h.isConstructedString()
	if flatten {
		if h.number == 3 {
			return 0, 0, 0, fmt.Errorf("%w: constructed BIT STRING", ErrUnsupported)
		}
		c.changed = true
	}
	limit := end
	if !h.indefinite {
		limit = p + h.length
	}
	content := 0
	for {
		if h.indefinite {
			if p+2 <= limit && c.in[p] == 0 && c.in[p+1] == 0 { // end-of-contents, X.690 section 8.1.5
				p += 2
				break
			}
			if p >= limit {
				return 0, 0, 0, malformed("missing end-of-contents for element at offset %d", off)
			}
		} else if p >= limit {
			break
		}
		if flatten {
			// A segment of a constructed string: same universal type, primitive or constructed
			// (X.690 section 8.21.5 / 8.7.3.2).
			ch, err := parseHeader(c.in[:limit], p)
			if err != nil {
				return 0, 0, 0, err
			}
			if ch.class != 0 || ch.number != h.number {
				return 0, 0, 0, malformed("segment of wrong type in constructed string at offset %d", p)
			}
			if !ch.compound {
				p += ch.hdrLen + ch.length
				content += ch.length
				continue
			}
			n, _, cl, err := c.measure(p, limit, depth+1)
			if err != nil {
				return 0, 0, 0, err
			}
			content += cl
			p = n
			continue
		}
		n, sz, _, err := c.measure(p, limit, depth+1)
		if err != nil {
			return 0, 0, 0, err
		}
		content += sz
		p = n
	}
	if content > MaxInputSize {
		return 0, 0, 0, fmt.Errorf("%w: element of %d bytes", ErrTooLarge, content)
	}
	if c.record {
		c.lens[idx] = int32(content)
	}
	return p, len(h.tag) + derLenLen(content) + content, content, nil
}

// appendLength appends the DER length octets for n (X.690 section 10.1).
func appendLength(dst []byte, n int) []byte {
	switch l := derLenLen(n); l {
	case 1:
		return append(dst, byte(n))
	default:
		dst = append(dst, byte(0x80|(l-1)))
		for i := l - 2; i >= 0; i-- {
			dst = append(dst, byte(n>>(8*i)))
		}
		return dst
	}
}

// write appends the DER form of the element at c.in[off:], already validated by measure, and returns the
// offset just past it in the input.
func (c *berConv) write(dst []byte, off, end int) ([]byte, int) {
	h, _ := parseHeader(c.in[:end], off)
	p := off + h.hdrLen
	if !h.compound {
		dst = append(dst, h.tag...)
		dst = appendLength(dst, h.length)
		return append(dst, c.in[p:p+h.length]...), p + h.length
	}
	content := int(c.lens[c.next])
	c.next++
	if h.isConstructedString() {
		dst = append(dst, h.tag[0]&^0x20)
		dst = appendLength(dst, content)
		return c.writeSegments(dst, h, p, end)
	}
	dst = append(dst, h.tag...)
	dst = appendLength(dst, content)
	limit := end
	if !h.indefinite {
		limit = p + h.length
	}
	for {
		if h.indefinite {
			if c.in[p] == 0 && c.in[p+1] == 0 {
				return dst, p + 2
			}
		} else if p >= limit {
			return dst, p
		}
		dst, p = c.write(dst, p, limit)
	}
}

// writeSegments appends the contents of the segments of a constructed string whose header is h and whose
// content starts at p.
func (c *berConv) writeSegments(dst []byte, h header, p, end int) ([]byte, int) {
	limit := end
	if !h.indefinite {
		limit = p + h.length
	}
	for {
		if h.indefinite {
			if c.in[p] == 0 && c.in[p+1] == 0 {
				return dst, p + 2
			}
		} else if p >= limit {
			return dst, p
		}
		ch, _ := parseHeader(c.in[:limit], p)
		q := p + ch.hdrLen
		if !ch.compound {
			dst = append(dst, c.in[q:q+ch.length]...)
			p = q + ch.length
			continue
		}
		c.next++
		dst, p = c.writeSegments(dst, ch, q, limit)
	}
}

// toDER returns the DER form of the single element that in holds, followed by nothing but optional zero
// padding. owned reports whether der is a fresh buffer (the input needed rewriting); otherwise der aliases in.
func toDER(in []byte) (der []byte, owned bool, err error) {
	if len(in) > MaxInputSize {
		return nil, false, fmt.Errorf("%w: input of %d bytes exceeds %d", ErrTooLarge, len(in), MaxInputSize)
	}
	c := &berConv{in: in}
	next, size, _, err := c.measure(0, len(in), 0)
	if err != nil {
		return nil, false, err
	}
	for _, b := range in[next:] {
		if b != 0 {
			return nil, false, malformed("%d trailing bytes after the content info", len(in)-next)
		}
	}
	if !c.changed {
		return in[:next:next], false, nil
	}
	// Second pass: the same walk over input already validated, now recording the lengths.
	c.record, c.lens, c.elements = true, make([]int32, 0, c.elements), 0
	if _, _, _, err := c.measure(0, len(in), 0); err != nil {
		return nil, false, err
	}
	out := make([]byte, 0, size)
	out, _ = c.write(out, 0, len(in))
	if len(out) != size {
		return nil, false, malformed("internal: DER rewrite size mismatch")
	}
	return out, true, nil
}
