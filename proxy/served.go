package proxy

import (
	"bytes"
	"strconv"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/smimeproxy/smimeproxy/internal/imapfmt"
)

// servedView computes FETCH items of one served (rewritten) message. Derived values are kept with the
// Rewriter's cached bytes when it implements DerivedCache, so a message is parsed once.
type servedView struct {
	b         []byte
	derive    func(name string, compute func() any) any
	structure imap.BodyStructure
}

func newServedView(r *relay, m mailboxRef, uid uint32, served []byte) *servedView {
	v := &servedView{b: served, derive: func(_ string, compute func() any) any { return compute() }}
	if dc, ok := r.srv.opts.Rewriter.(DerivedCache); ok {
		ref := r.ref(m, uid)
		v.derive = func(name string, compute func() any) any { return dc.Derived(ref, served, name, compute) }
	}
	return v
}

// bs returns the parsed structure (for part numbers).
func (v *servedView) bs() imap.BodyStructure {
	if v.structure == nil {
		v.structure = v.derive("bodystructure", func() any {
			return imapserver.ExtractBodyStructure(bytes.NewReader(v.b))
		}).(imap.BodyStructure)
	}
	return v.structure
}

// appendItem appends the value of body-dependent item it, computed from the served bytes.
func (v *servedView) appendItem(out []byte, it fetchItem, req *fetchReq) []byte {
	b := v.b
	switch it.name {
	case "RFC822.SIZE":
		return strconv.AppendInt(out, int64(len(b)), 10)
	case "RFC822":
		return appendLiteral(out, b)
	case "RFC822.HEADER":
		h, _ := splitEntity(b)
		return appendLiteral(out, h)
	case "RFC822.TEXT":
		_, body := splitEntity(b)
		return appendLiteral(out, body)
	case "ENVELOPE":
		return append(out, v.derive("imap-envelope", func() any { return imapfmt.Envelope(b) }).([]byte)...)
	case "BODY":
		return append(out, v.derive("imap-body", func() any { return imapfmt.BodyStructure(b, false) }).([]byte)...)
	case "BODYSTRUCTURE":
		return append(out, v.derive("imap-bodystructure", func() any { return imapfmt.BodyStructure(b, true) }).([]byte)...)
	}
	sr, ok := parseSectionItem(it.rawName, false)
	if !ok {
		return append(out, "NIL"...)
	}
	var data []byte
	switch sr.kind {
	case "BODY":
		data = bodySection(b, v.bs, &sr.sec)
	case "BINARY", "BINARY.SIZE":
		var err error
		if data, err = binarySection(b, v.bs, sr.sec.Part); err != nil {
			// RFC 3516 section 4.3: the server would refuse with [UNKNOWN-CTE]; the command's tagged
			// response is the upstream's, so the item is NIL.
			return append(out, "NIL"...)
		}
		if sr.kind == "BINARY.SIZE" {
			return strconv.AppendInt(out, int64(len(data)), 10)
		}
	}
	if sr.length == -2 {
		length := int64(-1)
		if req != nil {
			for _, q := range req.sections {
				if q.kind == sr.kind && q.origin == sr.origin && q.length >= 0 && sameSection(&q.sec, &sr.sec) {
					length = q.length
					break
				}
			}
		}
		off := min(sr.origin, int64(len(data)))
		end := int64(len(data))
		if length >= 0 {
			end = min(end, off+length)
		}
		data = data[off:end]
	}
	if sr.kind == "BINARY" {
		return appendLiteral8(out, data)
	}
	return appendLiteral(out, data)
}

func appendLiteral(out, data []byte) []byte {
	out = append(out, '{')
	out = strconv.AppendInt(out, int64(len(data)), 10)
	out = append(out, "}\r\n"...)
	return append(out, data...)
}

// appendLiteral8 writes a literal8 (RFC 3516 section 4.2) when data holds NUL, else a literal.
func appendLiteral8(out, data []byte) []byte {
	if bytes.IndexByte(data, 0) >= 0 {
		out = append(out, '~')
	}
	return appendLiteral(out, data)
}
