package mimepart

import (
	"bytes"
	"errors"
	"mime"
	"strings"
)

// Bounds of the tree Parse builds, those of Dovecot (internal/imapfmt): a multipart or message/rfc822 part
// deeper than MaxDepth, or met after MaxParts parts, is kept as a leaf.
const (
	MaxDepth = 100
	MaxParts = 10000
)

// maxBoundaryLen bounds the boundary parameter that is looked for (RFC 2046 section 5.1.1 allows 70); a longer
// one makes the multipart a leaf.
const maxBoundaryLen = 200

// Part is one MIME entity of a message (RFC 2045 section 2.4) and, for a multipart or an encapsulated message,
// its children: the tree every reader of a message in the project walks. Its byte slices alias the parsed
// message.
type Part struct {
	// Raw is the whole entity: Header, the empty line, Body.
	Raw []byte
	// Header holds the header fields (read with EachField), without the empty line that ends them.
	Header []byte
	// Body follows the empty line; it is empty when there is none.
	Body []byte
	// MediaType is the lowercased media type of the Content-Type field (RFC 2045 section 5), with its
	// parameters in Params (names lowercased). A missing or unparsable Content-Type is text/plain (section
	// 5.2), or message/rfc822 in a multipart/digest (RFC 2046 section 5.1.5); a media type with broken
	// parameters keeps the type and the parameters that parsed.
	MediaType string
	Params    map[string]string
	// Encoding is the Content-Transfer-Encoding, trimmed and lowercased ("" when absent).
	Encoding string
	// Multipart is set for a multipart within MaxDepth and MaxParts; Parts then holds its body parts in order
	// (RFC 2046 section 5.1.1: preamble and epilogue are not parts; a body without a boundary parameter or
	// without a delimiter has none).
	Multipart bool
	Parts     []*Part
	// Message is the encapsulated message of a message/rfc822 part (RFC 2046 section 5.2.1), within the
	// bounds; nil otherwise. As in Dovecot, whose numbering clients see in BODYSTRUCTURE, it is parsed from
	// the body as stored whatever the Content-Transfer-Encoding says (RFC 2046 allows only 7bit, 8bit and
	// binary there); a reader that wants the content of an encoded one decodes Body and parses that.
	Message *Part
	// Offsets of each element of Parts in Body: PartStart[i] where part i starts (after its delimiter line),
	// PartEnd[i] where it ends (before the line break that precedes the next delimiter).
	partStart, partEnd []int
}

// Parse reads msg into its tree. It never fails: whatever does not parse as MIME is a leaf.
func Parse(msg []byte) *Part {
	n := 0
	return parse(msg, "text/plain", 0, &n)
}

func parse(b []byte, defaultType string, depth int, count *int) *Part {
	*count++
	header, body := Split(b)
	p := &Part{Raw: b, Header: header, Body: body}
	ct, cte := "", ""
	EachField(header, func(f Field) {
		switch {
		case ct == "" && f.Is("Content-Type"):
			ct = f.Value()
			if ct == "" {
				ct = " " // present but empty: the first field counts
			}
		case cte == "" && f.Is("Content-Transfer-Encoding"):
			cte = f.Value()
		}
	})
	p.Encoding = NormalizeEncoding(cte)
	p.MediaType, p.Params = MediaType(ct, defaultType)
	if depth >= MaxDepth || *count >= MaxParts {
		return p
	}
	switch {
	case strings.HasPrefix(p.MediaType, "multipart/"):
		p.Multipart = true
		boundary := p.Params["boundary"]
		if boundary == "" || len(boundary) > maxBoundaryLen {
			return p // a multipart without parts (Dovecot numbers none either)
		}
		childType := "text/plain"
		if p.MediaType == "multipart/digest" {
			childType = "message/rfc822"
		}
		p.partStart, p.partEnd = multipartBounds(body, boundary, MaxParts-*count)
		for i := range p.partStart {
			if *count >= MaxParts {
				p.partStart, p.partEnd = p.partStart[:i], p.partEnd[:i]
				break
			}
			p.Parts = append(p.Parts, parse(body[p.partStart[i]:p.partEnd[i]], childType, depth+1, count))
		}
	case p.MediaType == "message/rfc822":
		p.Message = parse(body, "text/plain", depth+1, count)
	}
	return p
}

// MediaType parses a Content-Type value (RFC 2045 section 5.1, RFC 2231 parameters by mime.ParseMediaType):
// the lowercased media type and its parameters. An empty or unparsable value is defaultType; a media type
// with broken parameters keeps the type and whatever parameters parsed.
func MediaType(v, defaultType string) (string, map[string]string) {
	v = strings.TrimSpace(v)
	if v == "" {
		return defaultType, nil
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return defaultType, nil
	}
	return strings.ToLower(mt), params
}

// Get returns the value of p's first header field called name, or "".
func (p *Part) Get(name string) string { return Get(p.Header, name) }

// HeaderBlock returns p's header with the empty line that ends it (as BODY[n.MIME] and BODY[HEADER] return
// it, RFC 9051 section 6.4.5).
func (p *Part) HeaderBlock() []byte { return p.Raw[:len(p.Raw)-len(p.Body)] }

// Decoded returns p's body with its transfer encoding undone (Decode).
func (p *Part) Decoded() ([]byte, error) { return Decode(p.Encoding, p.Body) }

// Filename returns the filename parameter of p's Content-Disposition (RFC 2183 section 2.3), or "".
func (p *Part) Filename() string {
	_, params := MediaType(p.Get("Content-Disposition"), "")
	return params["filename"]
}

// Section returns the part that an IMAP section's part numbers name (RFC 9051 section 6.4.5), or nil: an empty
// path is the message itself; a multipart's children are numbered from 1; a part that is not multipart has
// only part 1, itself, which may be followed by more numbers only when it encapsulates a message, whose
// numbering continues into that message (its body's parts). This is Dovecot's numbering
// (imapfmt.Structure.PartExists).
func (p *Part) Section(path []int) *Part {
	pt := p
	for i, n := range path {
		more := i+1 < len(path)
		if pt.Multipart {
			if n < 1 || n > len(pt.Parts) {
				return nil
			}
			pt = pt.Parts[n-1]
		} else if n != 1 || more && pt.Message == nil {
			return nil
		}
		if more && !pt.Multipart && pt.Message != nil {
			pt = pt.Message
		}
	}
	return pt
}

// Walk calls fn for p and every part below it, depth first in order; fn returns false to skip a part's
// children.
func (p *Part) Walk(fn func(*Part) bool) {
	if !fn(p) {
		return
	}
	for _, c := range p.Parts {
		c.Walk(fn)
	}
	if p.Message != nil {
		p.Message.Walk(fn)
	}
}

// Delimiters returns, for a multipart, the layout of its body around the parts: Body[:start[0]] is the
// preamble and first delimiter line, Body[end[i]:start[i+1]] the line break and delimiter line between parts i
// and i+1, Body[end[last]:] the rest (close delimiter and epilogue). ok is false when p has no parts.
func (p *Part) Delimiters() (start, end []int, ok bool) {
	return p.partStart, p.partEnd, len(p.Parts) > 0
}

// MultipartParts returns up to max+1 body parts of a multipart body with the given boundary (RFC 2046 section
// 5.1.1), as Part.Parts would hold them: each part runs from after its delimiter line to before the line break
// that precedes the next delimiter. For a quick look at the first parts without parsing them.
func MultipartParts(body []byte, boundary string, max int) [][]byte {
	if boundary == "" || len(boundary) > maxBoundaryLen {
		return nil
	}
	start, end := multipartBounds(body, boundary, max)
	parts := make([][]byte, len(start))
	for i := range start {
		parts[i] = body[start[i]:end[i]]
	}
	return parts
}

// multipartBounds finds up to max+1 parts of a multipart body. A delimiter line is "--" boundary at the start
// of a line, then "--" for the close delimiter, then optional spaces and tabs (transport padding), then the
// line end or the end of the body; a close delimiter followed by anything else on its line still closes. The
// line break before a delimiter belongs to it. An unterminated last part runs to the end of the body.
func multipartBounds(body []byte, boundary string, max int) (starts, ends []int) {
	dash := "--" + boundary
	start := -1 // start of the current part's content, -1 before the first delimiter
	p := 0
	for p <= len(body) && len(starts) <= max {
		// Find the next line beginning with the delimiter.
		var at int
		if p == 0 && bytes.HasPrefix(body, []byte(dash)) {
			at = 0
		} else {
			from := p
			if from > 0 {
				from-- // the line break ending the previous delimiter line may precede the next delimiter
			}
			i := bytes.Index(body[from:], []byte("\n"+dash))
			if i < 0 {
				break
			}
			at = from + i + 1
		}
		q := at + len(dash)
		closing := bytes.HasPrefix(body[q:], []byte("--"))
		if closing {
			q += 2
		}
		for q < len(body) && (body[q] == ' ' || body[q] == '\t') {
			q++ // transport padding (RFC 2046 section 5.1.1)
		}
		lineEnd := -1
		switch {
		case q == len(body):
			lineEnd = q
		case body[q] == '\n':
			lineEnd = q + 1
		case body[q] == '\r' && q+1 < len(body) && body[q+1] == '\n':
			lineEnd = q + 2
		case closing:
			lineEnd = q // a close delimiter followed by junk on its line still closes
		}
		if lineEnd < 0 { // the boundary string is only a prefix of this line
			p = at + 1
			continue
		}
		if start >= 0 {
			end := at
			if end > start && body[end-1] == '\n' {
				end--
				if end > start && body[end-1] == '\r' {
					end--
				}
			}
			starts, ends = append(starts, start), append(ends, end)
		}
		if closing {
			return starts, ends
		}
		start = lineEnd
		p = lineEnd
		if p >= len(body) {
			break
		}
	}
	if start >= 0 && len(starts) <= max {
		starts, ends = append(starts, start), append(ends, len(body)) // unterminated last part
	}
	return starts, ends
}
