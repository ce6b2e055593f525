package proxy

import (
	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// Sections of a served copy (RFC 9051 section 6.4.5, RFC 3516) are cut from internal/mimepart's tree, the
// reader that also decides the copy's header fields and status fields and that decrypt searches: one parse,
// one numbering, one transfer decoder.

// bodySection returns BODY[section] of msg without its partial window: the whole message itself (no copy) for
// BODY[], empty for a part that does not exist. tree, when not nil, returns msg's mimepart tree (parsed once
// for all the sections of a response). exists reports whether a part path names a body part of msg
// (imapfmt.Structure.PartExists: Dovecot's numbering, the one BODYSTRUCTURE shows; a part that does not exist
// is served empty), and the tree (mimepart.Part.Section, the same numbering) finds it.
//
// BODY[n] is the part's body; BODY[n.MIME] its header with the empty line. HEADER, HEADER.FIELDS (.NOT) and
// TEXT apply to the message itself without part numbers, to the encapsulated message of a message/rfc822 part
// (RFC 2046 section 5.2.1), and to a part's own header and body otherwise; selected fields are returned as
// they are, in their order, then an empty line.
func bodySection(msg []byte, tree func() *mimepart.Part, exists func(part []int) bool, sec *imap.FetchItemBodySection) []byte {
	if len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierNone {
		return msg
	}
	if len(sec.Part) > 0 && !exists(sec.Part) {
		return nil
	}
	if len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierHeader && (len(sec.HeaderFields) > 0 || len(sec.HeaderFieldsNot) > 0) {
		// The top-level header fields, what a header sync asks of every message: no need to split or parse.
		return selectFields(msg, sec.HeaderFields, sec.HeaderFieldsNot)
	}
	var pt *mimepart.Part
	if len(sec.Part) == 0 {
		// The top-level header or text: no need to parse the parts.
		header, body := mimepart.Split(msg)
		pt = &mimepart.Part{Raw: msg, Header: header, Body: body}
	} else if pt = treeOf(msg, tree).Section(sec.Part); pt == nil {
		return nil
	}
	switch sec.Specifier {
	case imap.PartSpecifierNone:
		return pt.Body
	case imap.PartSpecifierMIME:
		return pt.HeaderBlock()
	}
	if len(sec.Part) > 0 && pt.Message != nil {
		pt = pt.Message
	}
	if sec.Specifier == imap.PartSpecifierText {
		return pt.Body
	}
	if len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0 {
		return pt.HeaderBlock()
	}
	return selectFields(pt.Header, sec.HeaderFields, sec.HeaderFieldsNot)
}

// treeOf returns tree(), msg's parse tree kept by the caller, or with tree nil a fresh parse of msg.
func treeOf(msg []byte, tree func() *mimepart.Part) *mimepart.Part {
	if tree != nil {
		return tree()
	}
	return mimepart.Parse(msg)
}

// selectFields returns the fields of the header at the start of header (mimepart.EachField) named in names, or with names empty those not
// named in not, as they are and in their order, then an empty line (RFC 9051 section 6.4.5 HEADER.FIELDS and
// HEADER.FIELDS.NOT). Names compare case-insensitively.
func selectFields(header []byte, names, not []string) []byte {
	list, keepNamed := names, true
	if len(names) == 0 {
		list, keepNamed = not, false
	}
	out := make([]byte, 0, 256)
	mimepart.EachField(header, func(f mimepart.Field) {
		named := false
		for _, n := range list {
			if len(n) == len(f.Name) && f.Is(n) {
				named = true
				break
			}
		}
		if named != keepNamed {
			return
		}
		out = append(out, f.Raw...)
		if f.Raw[len(f.Raw)-1] != '\n' {
			out = append(out, "\r\n"...)
		}
	})
	return append(out, "\r\n"...)
}

// binarySection returns BINARY[part] of msg (RFC 3516 section 4.2): content transfer encodings undone, and
// nothing else (no charset conversion). BINARY[] is the whole message converted the way Dovecot converts it:
// every part's base64 or quoted-printable body decoded, and in the header of each such part the
// Content-Transfer-Encoding field replaced by "Content-Transfer-Encoding: binary" (placed last); multipart
// boundaries, preambles and epilogues unchanged. BINARY[n] is part n's body converted the same way (a
// multipart part's children keep their converted headers). It fails with errUnknownCTE when an encoding is
// unknown or broken (RFC 3516 section 4.3; mimepart.Decode).
func binarySection(msg []byte, tree func() *mimepart.Part, exists func(part []int) bool, part []int) ([]byte, error) {
	root := treeOf(msg, tree)
	if len(part) == 0 {
		return binaryEntity(nil, root, true)
	}
	if !exists(part) {
		return nil, nil
	}
	pt := root.Section(part)
	if pt == nil {
		return nil, nil
	}
	return binaryEntity(nil, pt, false)
}

// binaryEntity appends the conversion of p to out; withHeader says whether its header is part of the result.
func binaryEntity(out []byte, p *mimepart.Part, withHeader bool) ([]byte, error) {
	converted := p.Encoding == "base64" || p.Encoding == "quoted-printable"
	if !converted && !mimepart.IsIdentity(p.Encoding) {
		return nil, errUnknownCTE
	}
	if withHeader {
		if converted {
			out = appendBinaryHeader(out, p)
		} else {
			out = append(out, p.HeaderBlock()...)
		}
	}
	switch {
	case p.Multipart:
		start, end, ok := p.Delimiters()
		if !ok {
			return append(out, p.Body...), nil
		}
		prev := 0
		for i, c := range p.Parts {
			out = append(out, p.Body[prev:start[i]]...)
			var err error
			if out, err = binaryEntity(out, c, true); err != nil {
				return nil, err
			}
			prev = end[i]
		}
		return append(out, p.Body[prev:]...), nil
	case p.Message != nil && !converted:
		return binaryEntity(out, p.Message, true)
	}
	dec, err := p.Decoded()
	if err != nil {
		return nil, errUnknownCTE
	}
	return append(out, dec...), nil
}

// appendBinaryHeader appends p's header without its Content-Transfer-Encoding fields, then
// "Content-Transfer-Encoding: binary" as the last field, then the empty line.
func appendBinaryHeader(out []byte, p *mimepart.Part) []byte {
	mimepart.EachField(p.Header, func(f mimepart.Field) {
		if !f.Is("Content-Transfer-Encoding") {
			out = append(out, f.Raw...)
			if f.Raw[len(f.Raw)-1] != '\n' {
				out = append(out, "\r\n"...)
			}
		}
	})
	out = append(out, "Content-Transfer-Encoding: binary\r\n"...)
	return append(out, p.HeaderBlock()[len(p.Header):]...)
}

// errUnknownCTE is the NO of RFC 3516 section 4.3 for a part whose transfer encoding cannot be undone.
var errUnknownCTE = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnknownCTE, Text: "Unknown Content-Transfer-Encoding"}
