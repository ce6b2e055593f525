package proxy

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/internal/imapfmt"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/internal/rewriting"
)

// servedView computes FETCH items of one served (rewritten) message. Derived values are kept with the
// Rewriter's cached bytes when Options.DerivedCache is set, so a message is parsed once.
type servedView struct {
	// failed is set when a BINARY item could not be computed (a part's transfer encoding cannot be undone):
	// the server then answers the whole command NO [PARSE] (Dovecot) or NO [UNKNOWN-CTE] (RFC 3516 section
	// 4.3), and so does the relay.
	failed    bool
	b         []byte
	derive    func(name string, compute func() any) any
	structure *imapfmt.Structure
	root      *mimepart.Part // the tree of b for sections, parsed on first use
	// meta, when set, answers in place of b (which is nil): only the items metaItem accepts.
	meta *ServedMeta
}

// ServedMeta is the metadata of a served copy (MetaSource); MetaOf computes it.
type ServedMeta = rewriting.Meta

// MetaOf computes the metadata of served, a message's served copy.
func MetaOf(served []byte) ServedMeta { return rewriting.MetaOf(served) }

// metaItem reports whether a FETCH item (response form, e.g. "BODY[HEADER.FIELDS (FROM)]<0>") can be
// answered from ServedMeta.
func metaItem(name string) bool {
	switch up := strings.ToUpper(name); up {
	case "RFC822.SIZE", "RFC822.HEADER", "ENVELOPE", "BODY", "BODYSTRUCTURE":
		return true
	}
	sr, ok := parseSectionItem([]byte(name), false)
	return ok && sr.kind == "BODY" && len(sr.sec.Part) == 0 && sr.sec.Specifier == imap.PartSpecifierHeader
}

func newServedView(r *relay, m mailboxRef, uid uint32, served []byte) *servedView {
	v := &servedView{b: served, derive: func(_ string, compute func() any) any { return compute() }}
	if dc := r.srv.opts.DerivedCache; dc != nil {
		ref := r.ref(m, uid)
		v.derive = func(name string, compute func() any) any { return dc.Derived(ref, served, name, compute) }
	}
	return v
}

// exists reports whether a part path names a body part of the served copy.
func (v *servedView) exists(part []int) bool {
	if v.structure == nil {
		v.structure = v.derive("imap-structure", func() any { return imapfmt.Parse(v.b) }).(*imapfmt.Structure)
	}
	return v.structure.PartExists(part)
}

// tree returns the mimepart tree of the served copy, parsed once per response.
func (v *servedView) tree() *mimepart.Part {
	if v.root == nil {
		v.root = mimepart.Parse(v.b)
	}
	return v.root
}

// parts builds a response from small pieces and large slices it does not copy (a served message's bytes).
type parts struct {
	done [][]byte
	cur  []byte
}

// ref appends data without copying it when it is large.
func (p *parts) ref(data []byte) {
	if len(data) < 16<<10 {
		p.cur = append(p.cur, data...)
		return
	}
	p.done = append(p.done, p.cur, data)
	p.cur = nil
}

func (p *parts) all() [][]byte { return append(p.done, p.cur) }

// appendItem appends the value of body-dependent item it, computed from the served bytes.
func (v *servedView) appendItem(p *parts, it fetchItem, req *fetchReq) {
	out := p.cur
	defer func() { p.cur = out }()
	b := v.b
	if m := v.meta; m != nil {
		switch it.name {
		case "RFC822.SIZE":
			out = strconv.AppendInt(out, m.Size, 10)
			return
		case "RFC822.HEADER":
			out = v.literal(p, out, m.Header)
			return
		case "ENVELOPE":
			out = append(out, m.Envelope...)
			return
		case "BODY":
			out = append(out, m.Body...)
			return
		case "BODYSTRUCTURE":
			out = append(out, m.BodyStructure...)
			return
		}
		b = m.Header // a top-level header section (metaItem)
	}
	switch it.name {
	case "RFC822.SIZE":
		out = strconv.AppendInt(out, int64(len(b)), 10)
		return
	case "RFC822":
		out = v.literal(p, out, b)
		return
	case "RFC822.HEADER":
		h, _ := mimepart.SplitBlock(b)
		out = v.literal(p, out, h)
		return
	case "RFC822.TEXT":
		_, body := mimepart.SplitBlock(b)
		out = v.literal(p, out, body)
		return
	case "ENVELOPE":
		out = append(out, v.derive("imap-envelope", func() any { return imapfmt.Envelope(b) }).([]byte)...)
		return
	case "BODY":
		out = append(out, v.derive("imap-body", func() any { return imapfmt.BodyStructure(b, false) }).([]byte)...)
		return
	case "BODYSTRUCTURE":
		out = append(out, v.derive("imap-bodystructure", func() any { return imapfmt.BodyStructure(b, true) }).([]byte)...)
		return
	}
	sr, ok := responseSection(req, it.rawName)
	if !ok {
		out = append(out, "NIL"...)
		return
	}
	var data []byte
	switch sr.kind {
	case "BODY":
		data = bodySection(b, v.tree, v.exists, &sr.sec)
	case "BINARY", "BINARY.SIZE":
		var err error
		if data, err = binarySection(b, v.tree, v.exists, sr.sec.Part); err != nil {
			v.failed = true
			out = append(out, "NIL"...)
			return
		}
		if sr.kind == "BINARY.SIZE" && len(sr.sec.Part) > 0 {
			// Dovecot answers BINARY.SIZE[n] from the sizes of the whole message converted, so a broken
			// encoding anywhere fails it, while BINARY[n] converts part n alone.
			if _, err := binarySection(b, v.tree, v.exists, nil); err != nil {
				v.failed = true
				out = append(out, "NIL"...)
				return
			}
		}
		if sr.kind == "BINARY.SIZE" {
			out = strconv.AppendInt(out, int64(len(data)), 10)
			return
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
	if sr.kind == "BINARY" && bytes.IndexByte(data, 0) >= 0 {
		out = append(out, '~') // literal8 (RFC 3516 section 4.2)
	}
	out = v.literal(p, out, data)
}

// literal appends a literal of data: the announcement to out, the data by reference.
func (v *servedView) literal(p *parts, out, data []byte) []byte {
	out = append(out, '{')
	out = strconv.AppendInt(out, int64(len(data)), 10)
	out = append(out, "}\r\n"...)
	p.cur = out
	p.ref(data)
	return p.cur
}
