package imapfmt

import (
	"bytes"
	"sort"
	"strconv"
	"strings"
)

// This file computes BODY and BODYSTRUCTURE (RFC 3501 sections 7.4.2 and 9, RFC 9051 section 7.5.2): a MIME
// parser (RFC 2045, RFC 2046) that builds the part tree and sizes like Dovecot's message-parser.c, the
// Content-* field parsers of message-part-data.c with RFC 2231 parameters like rfc2231-parser.c, and the
// writer of imap-bodystructure.c.

// Dovecot's MIME part limits (MESSAGE_PARSER_DEFAULT_MAX_NESTED_MIME_PARTS and _MAX_TOTAL_MIME_PARTS). A
// multipart or message/rfc822 part beyond them is not parsed into children and is written as
// application/octet-stream.
const (
	maxNestedParts = 100
	maxTotalParts  = 10000
)

// maxParams is how many parameters, broken ones included, Dovecot parses from one field (RFC2231_MAX_PARAMS,
// from the fix of CVE-2026-27859); the rest is ignored.
const maxParams = 128

// maxBoundaryLen is the length boundaries are cut to (RFC 2046 section 5.1.1 allows 70, Dovecot takes 80).
const maxBoundaryLen = 70 + 10

// maxBoundaryLineLen is how much of an unterminated last line is compared with the boundaries.
const maxBoundaryLineLen = maxBoundaryLen + 2 + 2

type partFlags uint8

const (
	flagMultipart partFlags = 1 << iota
	flagMultipartDigest
	flagMessageRFC822
	flagText
	// flagIsMIME is set by a MIME-Version or Content-Type field, and for every body part of a multipart.
	// Without it the Content-* fields of the part are ignored.
	flagIsMIME
)

// part is a node of the MIME tree.
type part struct {
	parent   *part
	children []*part
	flags    partFlags
	header   msgSize
	body     msgSize
	data     *partData
}

type param struct{ name, value string }

// partData holds what BODYSTRUCTURE shows of a part's header; nil pointers and slices are NIL.
type partData struct {
	// contentType and contentSubtype come from the first Content-Type field; the subtype is "" when the
	// field has no valid "/subtype".
	contentType      *string
	contentSubtype   string
	typeParams       []param
	transferEncoding *string
	id               *string
	description      *string
	disposition      *string
	dispParams       []param
	md5              *string
	language         []string
	location         *string
	// envelope is the ENVELOPE of a message's header: the root's, or that of a message/rfc822 part's child.
	envelope envelope
}

type boundary struct {
	part          *part
	boundary      []byte
	epilogueFound bool
}

type parserState uint8

const (
	stateHeaderInit parserState = iota
	stateHeader
	stateMIMEHeaderInit
	stateRFC822Init
	stateBodyToBoundary
	stateBodyToEOF
	stateSkipBoundaryLine
	stateDone
)

// mimeParser is Dovecot's message_parser_ctx working on a message held in memory.
type mimeParser struct {
	d     []byte
	pos   int
	state parserState
	part  *part
	// boundaries are those of the open multiparts, innermost last.
	boundaries []*boundary
	// lastBoundary is the boundary parameter of the part whose header is being parsed.
	lastBoundary    []byte
	seenContentType bool
	multipart       bool
	lastChr         byte
	nested, total   int
	hdr             *headerParser
	prevHdrNewline  bool
	// allHeaders counts header octets against maxAllHeadersSize.
	allHeaders int
	limits     *mailLimits
}

// parseMIME parses a message in Dovecot's stored form into its part tree.
func parseMIME(d []byte) *part {
	root := &part{}
	p := &mimeParser{d: d, part: root, total: 1, limits: newMailLimits()}
	for p.state != stateDone {
		p.step()
	}
	for p.part.parent != nil {
		p.finishPart()
	}
	return root
}

func (p *mimeParser) step() {
	switch p.state {
	case stateHeaderInit:
		pt := p.part
		p.hdr = newHeaderParser(p.d, p.pos, &pt.header, func(name []byte) bool {
			// The fields whose full value Dovecot asks for: Content-* and, in a message's own header,
			// the envelope.
			return isContentField(name) ||
				((pt.parent == nil || pt.parent.flags&flagMessageRFC822 != 0) && isEnvelopeField(name))
		})
		p.seenContentType = false
		p.prevHdrNewline = false
		p.state = stateHeader
	case stateHeader:
		p.parseHeader()
	case stateMIMEHeaderInit:
		p.appendPart()
		p.part.flags |= flagIsMIME
		p.state = stateHeaderInit
	case stateRFC822Init:
		p.appendPart()
		p.state = stateHeaderInit
	case stateBodyToBoundary:
		p.parseBodyToBoundary()
	case stateBodyToEOF:
		if p.pos < len(p.d) {
			p.addBlock(p.d[p.pos:])
		}
		p.state = stateDone
	case stateSkipBoundaryLine:
		p.skipBoundaryLine()
	}
}

func (p *mimeParser) tooManyNested() bool { return p.nested+1 >= maxNestedParts }

func (p *mimeParser) appendPart() {
	child := &part{parent: p.part}
	p.part.children = append(p.part.children, child)
	p.part = child
	p.nested++
	p.total++
}

// finishPart adds the current part's header and body to its parent's body and returns to the parent.
func (p *mimeParser) finishPart() {
	parent := p.part.parent
	parent.body.add(p.part.body)
	parent.body.add(p.part.header)
	p.part = parent
	p.nested--
}

// addBlock counts a non-empty piece of body into the current part.
func (p *mimeParser) addBlock(b []byte) {
	s := &p.part.body
	missingCR := int64(0)
	if b[0] == '\n' {
		s.lines++
		if p.lastChr != '\r' {
			missingCR++
		}
	}
	for i := 1; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		s.lines++
		if b[i-1] != '\r' {
			missingCR++
		}
		i++
	}
	p.lastChr = b[len(b)-1]
	s.virtual += int64(len(b)) + missingCR
}

// findBoundary reports which open boundary, if any, the line at the start of b is (RFC 2046 section 5.1.1:
// "--" and the boundary; the rest of the line is ignored). Like Dovecot it picks the longest matching
// boundary, the innermost of equally long ones, stopping early at an exact match.
func (p *mimeParser) findBoundary(b []byte) *boundary {
	if len(b) < 2 || b[0] != '-' || b[1] != '-' || len(p.boundaries) == 0 {
		return nil
	}
	if p.total >= maxTotalParts {
		return nil
	}
	b = b[2:]
	n := len(b)
	trailingDashes := false
	if lf := bytes.IndexByte(b, '\n'); lf >= 0 {
		n = lf
		if n > 0 && b[n-1] == '\r' {
			n--
		}
		trailingDashes = n > 2 && b[n-1] == '-' && b[n-2] == '-'
	} else if n > maxBoundaryLineLen {
		n = maxBoundaryLineLen
	}
	var best *boundary
	for i := len(p.boundaries) - 1; i >= 0; i-- {
		c := p.boundaries[i]
		l := len(c.boundary)
		if l > n || !bytes.Equal(c.boundary, b[:l]) || (best != nil && len(best.boundary) >= l) {
			continue
		}
		best = c
		if l == n || (l == n-2 && trailingDashes) {
			break
		}
	}
	if best != nil {
		l := len(best.boundary)
		best.epilogueFound = len(b) >= l+2 && b[l] == '-' && b[l+1] == '-'
	}
	return best
}

// parseHeader handles one header line of the current part, or the end of its header.
func (p *mimeParser) parseHeader() {
	pt := p.part
	rest := p.d[p.pos:]
	if len(rest) > 0 && atEndOfHeader(rest) && p.lastBoundary != nil && pt.flags&flagIsMIME != 0 {
		// The multipart's boundary is registered before its body so that a "--boundary" line is not
		// taken for an outer boundary that shares its prefix.
		if !p.tooManyNested() {
			p.boundaries = append(p.boundaries, &boundary{part: pt, boundary: p.lastBoundary})
			p.lastBoundary = nil
			p.multipart = true
		} else {
			pt.flags &^= flagMultipart
		}
	}
	var l *headerLine
	if b := p.findBoundary(rest); b == nil || b.part == pt {
		p.hdr.maxSize = min(p.hdr.maxSize, max(0, maxAllHeadersSize-p.allHeaders))
		l = p.hdr.next()
		if l != nil {
			if !l.continues {
				p.allHeaders += l.nameMiddle
			}
			p.allHeaders += l.lineValue
		}
	} else if p.prevHdrNewline {
		// A boundary line ends the header early; the line ending before it belongs to the boundary.
		pt.header.lines--
		pt.header.virtual -= 2
		pt.parent.body.lines++
		pt.parent.body.virtual += 2
	}
	if l != nil {
		p.pos = p.hdr.pos
		if !l.eoh {
			switch {
			case nameIs(l.name, "MIME-Version"):
				pt.flags |= flagIsMIME
			case nameIs(l.name, "Content-Type"):
				pt.flags |= flagIsMIME
				if !l.continues {
					p.parseContentType(l.value)
				}
			}
		}
		p.prevHdrNewline = l.newline
		pt.parseHeaderData(l, p.limits)
		return
	}

	// End of the header.
	if pt.flags&flagIsMIME == 0 {
		pt.flags = 0
	}
	p.lastBoundary = nil
	if !p.seenContentType || pt.flags&flagIsMIME == 0 {
		if pt.parent != nil && pt.parent.flags&flagMultipartDigest != 0 {
			// RFC 2046 section 5.1.5: the default in a digest is message/rfc822.
			pt.flags |= flagMessageRFC822
		} else {
			pt.flags |= flagText
		}
	}
	p.hdr = nil
	p.lastChr = '\n'
	switch {
	case p.multipart:
		p.multipart = false
		p.state = stateBodyToBoundary
	case pt.flags&flagMessageRFC822 != 0 && !p.tooManyNested() && p.total < maxTotalParts:
		p.state = stateRFC822Init
	default:
		pt.flags &^= flagMessageRFC822
		p.state = p.bodyState()
	}
	pt.endHeaderData()
}

func (p *mimeParser) bodyState() parserState {
	if len(p.boundaries) > 0 {
		return stateBodyToBoundary
	}
	return stateBodyToEOF
}

func atEndOfHeader(b []byte) bool {
	return b[0] == '\n' || (b[0] == '\r' && len(b) > 1 && b[1] == '\n')
}

// parseContentType sets the part's type flags and boundary from its first Content-Type field.
func (p *mimeParser) parseContentType(v []byte) {
	if p.seenContentType {
		return
	}
	p.seenContentType = true
	ct, params, ok := parseContentTypeValue(v)
	pt := p.part
	switch {
	case asciiEqualFold(ct, "message/rfc822"):
		pt.flags |= flagMessageRFC822
	case len(ct) >= 4 && asciiEqualFold(ct[:4], "text") && (len(ct) == 4 || ct[4] == '/'):
		pt.flags |= flagText
	case len(ct) >= 10 && asciiEqualFold(ct[:10], "multipart/"):
		pt.flags |= flagMultipart
		if asciiEqualFold(ct[10:], "digest") {
			pt.flags |= flagMultipartDigest
		}
	}
	if !ok || pt.flags&flagMultipart == 0 || p.lastBoundary != nil {
		return
	}
	for _, prm := range params {
		if asciiEqualFold(prm.name, "boundary") {
			b := prm.value
			if len(b) > maxBoundaryLen {
				b = b[:maxBoundaryLen]
			}
			p.lastBoundary = []byte(b)
			return
		}
	}
}

// parseBodyToBoundary adds body lines to the current part up to the next boundary line.
func (p *mimeParser) parseBodyToBoundary() {
	rest := p.d[p.pos:]
	if len(rest) == 0 {
		p.state = stateDone
		return
	}
	if p.lastChr == '\n' {
		if b := p.findBoundary(rest); b != nil {
			p.finishAtBoundary(b, true)
			return
		}
	}
	for cur := 0; ; {
		lf := bytes.IndexByte(rest[cur:], '\n')
		if lf < 0 {
			break
		}
		lineEnd := cur + lf
		cur = lineEnd + 1
		if b := p.findBoundary(rest[cur:]); b != nil {
			if lineEnd > 0 && rest[lineEnd-1] == '\r' {
				lineEnd--
			}
			if lineEnd > 0 {
				p.addBlock(rest[:lineEnd])
				p.pos += lineEnd
			}
			p.finishAtBoundary(b, false)
			return
		}
	}
	p.addBlock(rest)
	p.pos = len(p.d)
	p.state = stateDone
}

// finishAtBoundary closes the parts inside the boundary's multipart and counts the boundary, with the line
// ending before it unless it starts the body, into the multipart's body.
func (p *mimeParser) finishAtBoundary(b *boundary, firstLine bool) {
	for p.part != b.part {
		p.finishPart()
	}
	i := len(p.boundaries) - 1
	for p.boundaries[i] != b {
		i--
	}
	if b.epilogueFound {
		p.boundaries = p.boundaries[:i]
	} else {
		p.boundaries = p.boundaries[:i+1]
	}
	n := 2 + len(b.boundary)
	if b.epilogueFound {
		n += 2
	}
	if !firstLine {
		n++
		if p.d[p.pos] == '\r' {
			n++
		}
	}
	p.addBlock(p.d[p.pos : p.pos+n])
	p.pos += n
	p.state = stateSkipBoundaryLine
}

// skipBoundaryLine counts the rest of a boundary line into the multipart, then starts the next body part,
// or the epilogue after a close-delimiter.
func (p *mimeParser) skipBoundaryLine() {
	rest := p.d[p.pos:]
	if len(rest) == 0 {
		p.state = stateDone
		return
	}
	lf := bytes.IndexByte(rest, '\n')
	if lf < 0 {
		p.addBlock(rest)
		p.pos = len(p.d)
		p.state = stateDone
		return
	}
	p.addBlock(rest[:lf+1])
	p.pos += lf + 1
	if n := len(p.boundaries); n == 0 || p.boundaries[n-1].part != p.part {
		p.state = p.bodyState()
	} else {
		p.state = stateMIMEHeaderInit
	}
}

// parseHeaderData takes a header line into the part's data, as Dovecot's message_part_data_parse_from_header.
// The envelope of the message's own header is parsed too, as when Dovecot answers ENVELOPE and BODYSTRUCTURE
// from the same parse: it draws on the same address budget as the envelopes of message/rfc822 parts.
func (pt *part) parseHeaderData(l *headerLine, lim *mailLimits) {
	if l.eoh {
		return
	}
	withEnvelope := pt.parent == nil || pt.parent.flags&flagMessageRFC822 != 0
	name := l.name
	isContent := isContentField(name)
	if !withEnvelope && !isContent {
		return
	}
	if pt.data == nil {
		pt.data = &partData{}
	}
	if isContent && !l.continues {
		pt.data.parseContentField(string(name[8:]), l.value, lim)
	}
	if withEnvelope {
		pt.data.envelope.parseHeader(l, lim)
	}
}

// endHeaderData finishes the part's data at the end of its header: without MIME-Version or Content-Type the
// Content-* fields do not count (RFC 2045 section 4).
func (pt *part) endHeaderData() {
	switch {
	case pt.data == nil:
		pt.data = &partData{}
	case pt.flags&flagIsMIME == 0:
		*pt.data = partData{envelope: pt.data.envelope}
	}
}

// parseContentField parses a Content-* field; for each kind the first field counts (for
// Content-Disposition, the first one with parameters).
func (d *partData) parseContentField(name string, v []byte, lim *mailLimits) {
	switch {
	case asciiEqualFold(name, "ID"):
		if d.id == nil {
			d.id = strdupPtr(v)
		}
	case asciiEqualFold(name, "MD5"):
		if d.md5 == nil {
			d.md5 = strdupPtr(v)
		}
	case asciiEqualFold(name, "Type"):
		if d.contentType == nil {
			ct, params, ok := parseContentTypeValue(v)
			typ, sub, _ := strings.Cut(ct, "/")
			d.contentType, d.contentSubtype = &typ, sub
			if ok {
				d.typeParams = lim.takeParams(params)
			}
		}
	case asciiEqualFold(name, "Transfer-Encoding"):
		if d.transferEncoding == nil {
			lx := lexer{d: v}
			lx.skipLWSP()
			var tok []byte
			if lx.parseMimeToken(&tok) >= 0 && lx.skipLWSP() == 0 && len(tok) > 0 {
				d.transferEncoding = some(tok)
			}
		}
	case asciiEqualFold(name, "Language"):
		if d.language == nil {
			d.language = parseLanguages(v, lim)
		}
	case asciiEqualFold(name, "Location"):
		if d.location == nil {
			d.location = strdupPtr(v)
		}
	case asciiEqualFold(name, "Description"):
		if d.description == nil {
			d.description = strdupPtr(v)
		}
	case asciiEqualFold(name, "Disposition"):
		if d.dispParams == nil {
			lx := lexer{d: v}
			lx.skipLWSP()
			var tok []byte
			if lx.parseMimeToken(&tok) < 0 {
				return
			}
			d.disposition = some(tok)
			d.dispParams = lim.takeParams(parseParams(&lx))
		}
	}
}

func strdupPtr(v []byte) *string {
	s := headerStrdup(v)
	return &s
}

// parseContentTypeValue parses a Content-Type value into "type/subtype" and its parameters; ok is false
// when the type is invalid, and then ct is what Dovecot keeps of it (see lexer.parseContentType).
func parseContentTypeValue(v []byte) (ct string, params []param, ok bool) {
	lx := lexer{d: v}
	lx.skipLWSP()
	var str []byte
	if lx.parseContentType(&str) < 0 {
		return string(str), nil, false
	}
	return string(str), parseParams(&lx), true
}

// takeParams returns as many of params as the budget allows.
func (lim *mailLimits) takeParams(params []param) []param {
	n := min(len(params), lim.params)
	lim.params -= n
	if n == 0 {
		return nil
	}
	return params[:n]
}

// parseLanguages parses Content-Language (RFC 3282): a comma separated list of language tags.
func parseLanguages(v []byte, lim *mailLimits) []string {
	lx := lexer{d: v}
	lx.skipLWSP()
	var langs []string
	var tok []byte
	for lx.parseAtom(&tok) >= 0 && lim.languages > 0 {
		lim.languages--
		langs = append(langs, string(tok))
		tok = tok[:0]
		if !lx.more() || lx.cur() != ',' {
			break
		}
		lx.pos++
		lx.skipLWSP()
	}
	return langs
}

// parseParams parses the parameters after a Content-Type or Content-Disposition value, skipping broken ones
// and stopping after maxParams, and joins RFC 2231 continuations (section 3) as Dovecot does: name*0,
// name*1... become one parameter; if any piece is extended (charset'language'%XX), its name gets a "*", the
// value stays encoded, an empty charset and language are put in front when the first piece is not extended
// and the "%" of unextended pieces are escaped as "%25". Pieces with missing or duplicate numbers are kept
// as they are.
func parseParams(lx *lexer) []param {
	type piece struct {
		key, value string
		idx        uint32
		extended   bool
	}
	lx.replaceNUL = true
	var (
		result []param
		pieces []piece
		cur    piece // its idx and extended carry over from one parameter to the next, as in Dovecot
		value  []byte
	)
	for count := 1; ; count++ {
		key, ret := lx.parseContentParam(&value)
		if ret == 0 || count > maxParams {
			break
		}
		if ret < 0 {
			if !lx.more() {
				break
			}
			lx.pos++
			continue
		}
		k, v := string(key), string(cstr(value))
		if star := strings.IndexByte(k, '*'); star >= 0 {
			i := star
			if i+1 < len(k) {
				i++
				cur.idx = 0
				for ; i < len(k) && k[i] >= '0' && k[i] <= '9'; i++ {
					cur.idx = cur.idx*10 + uint32(k[i]-'0')
				}
			}
			cur.extended = i < len(k) && k[i] == '*'
			if cur.extended {
				i++
			}
			if i == len(k) {
				cur.key, cur.value = k[:star], v
				pieces = append(pieces, cur)
				continue
			}
		}
		result = append(result, param{k, v})
	}
	sort.SliceStable(pieces, func(i, j int) bool {
		if pieces[i].key != pieces[j].key {
			return pieces[i].key < pieces[j].key
		}
		return pieces[i].idx < pieces[j].idx
	})
	for i, next := 0, 0; i < len(pieces); i = next {
		ok, extended := true, false
		next = i
		for want := uint32(0); next < len(pieces) && asciiEqualFold(pieces[i].key, pieces[next].key); want++ {
			if pieces[next].idx != want {
				ok = false
			}
			extended = extended || pieces[next].extended
			next++
		}
		if !ok {
			for _, pc := range pieces[i:next] {
				k := pc.key + "*" + strconv.FormatUint(uint64(pc.idx), 10)
				if pc.extended {
					k += "*"
				}
				result = append(result, param{k, pc.value})
			}
			continue
		}
		var v strings.Builder
		if !pieces[i].extended && extended {
			v.WriteString("''")
		}
		for _, pc := range pieces[i:next] {
			if !pc.extended && extended {
				v.WriteString(strings.ReplaceAll(pc.value, "%", "%25"))
			} else {
				v.WriteString(pc.value)
			}
		}
		k := pieces[i].key
		if extended {
			k += "*"
		}
		result = append(result, param{k, v.String()})
	}
	return result
}

// isPlain7bit reports a single text/plain us-ascii 7bit part without other header data
// (message_part_data_is_plain_7bit), which Dovecot writes in a fixed spelling.
func (pt *part) isPlain7bit() bool {
	d := pt.data
	if pt.flags&flagText == 0 || len(pt.children) > 0 {
		return false
	}
	if d.contentType != nil && !asciiEqualFold(d.contentSubtype, "plain") {
		return false
	}
	switch len(d.typeParams) {
	case 0:
	case 1:
		if !asciiEqualFold(d.typeParams[0].name, "charset") || !asciiEqualFold(d.typeParams[0].value, "us-ascii") {
			return false
		}
	default:
		return false
	}
	return d.id == nil && d.description == nil &&
		(d.transferEncoding == nil || asciiEqualFold(*d.transferEncoding, "7bit")) &&
		d.md5 == nil && d.disposition == nil && d.language == nil && d.location == nil
}

// The body of a multipart without parts, which IMAP does not allow.
const (
	emptyBody          = `("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)`
	emptyBodyStructure = `("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)`
)

// appendBodyStructure writes the part's body structure without the surrounding parentheses.
func (pt *part) appendBodyStructure(out []byte, extended bool) []byte {
	if pt.flags&flagMultipart != 0 {
		return pt.appendMultipart(out, extended)
	}
	return pt.appendLeaf(out, extended)
}

func (pt *part) appendMultipart(out []byte, extended bool) []byte {
	d := pt.data
	for _, c := range pt.children {
		out = append(out, '(')
		out = c.appendBodyStructure(out, extended)
		out = append(out, ')')
	}
	switch {
	case len(pt.children) > 0:
	case extended:
		out = append(out, emptyBodyStructure...)
	default:
		out = append(out, emptyBody...)
	}
	out = append(out, ' ')
	out = appendString(out, d.contentSubtype)
	if !extended {
		return out
	}
	out = append(out, ' ')
	out = appendParams(out, d.typeParams, false)
	return d.appendExtensions(out)
}

func (pt *part) appendLeaf(out []byte, extended bool) []byte {
	d := pt.data
	text := false
	switch {
	case pt.flags&flagMessageRFC822 != 0:
		out = append(out, `"message" "rfc822"`...)
	case pt.isTruncated():
		out = append(out, `"application" "octet-stream"`...)
	case d.contentType == nil:
		text = true
		out = append(out, `"text" "plain"`...)
	default:
		text = asciiEqualFold(*d.contentType, "text")
		out = appendString(out, *d.contentType)
		out = append(out, ' ')
		out = appendString(out, d.contentSubtype)
	}
	out = append(out, ' ')
	out = appendParams(out, d.typeParams, text)
	out = append(out, ' ')
	out = appendNStringNoLF(out, d.id)
	out = append(out, ' ')
	out = appendNStringNoLF(out, d.description)
	out = append(out, ' ')
	if d.transferEncoding != nil {
		out = appendString(out, *d.transferEncoding)
	} else {
		out = append(out, `"7bit"`...)
	}
	out = append(out, ' ')
	out = strconv.AppendInt(out, pt.body.virtual, 10)
	switch {
	case text:
		out = append(out, ' ')
		out = strconv.AppendInt(out, pt.body.lines, 10)
	case pt.flags&flagMessageRFC822 != 0:
		child := pt.children[0]
		out = append(out, " ("...)
		out = child.data.envelope.appendTo(out)
		out = append(out, ") ("...)
		out = child.appendBodyStructure(out, extended)
		out = append(out, ") "...)
		out = strconv.AppendInt(out, pt.body.lines, 10)
	}
	if !extended {
		return out
	}
	out = append(out, ' ')
	out = appendNStringNoLF(out, d.md5)
	return d.appendExtensions(out)
}

// isTruncated reports a multipart or message/rfc822 part left unparsed at the MIME part limits, or a part
// of a multipart/digest left without its default message/rfc822 type.
func (pt *part) isTruncated() bool {
	d := pt.data
	if d.contentType == nil {
		return pt.parent != nil && pt.parent.flags&flagMultipartDigest != 0
	}
	return (asciiEqualFold(*d.contentType, "message") && asciiEqualFold(d.contentSubtype, "rfc822")) ||
		asciiEqualFold(*d.contentType, "multipart")
}

// appendExtensions writes body-fld-dsp, body-fld-lang and body-fld-loc.
func (d *partData) appendExtensions(out []byte) []byte {
	out = append(out, ' ')
	if d.disposition == nil {
		out = append(out, "NIL"...)
	} else {
		out = append(out, '(')
		out = appendString(out, *d.disposition)
		out = append(out, ' ')
		out = appendParams(out, d.dispParams, false)
		out = append(out, ')')
	}
	out = append(out, ' ')
	if d.language == nil {
		out = append(out, "NIL"...)
	} else {
		out = append(out, '(')
		for i, l := range d.language {
			if i > 0 {
				out = append(out, ' ')
			}
			out = appendString(out, l)
		}
		out = append(out, ')')
	}
	out = append(out, ' ')
	return appendNStringNoLF(out, d.location)
}

// appendParams writes a parameter list, adding charset us-ascii to text parts that lack it (RFC 2045
// section 5.2).
func appendParams(out []byte, params []param, defaultCharset bool) []byte {
	if !defaultCharset && len(params) == 0 {
		return append(out, "NIL"...)
	}
	out = append(out, '(')
	seenCharset := false
	for i, prm := range params {
		if i > 0 {
			out = append(out, ' ')
		}
		if defaultCharset && asciiEqualFold(prm.name, "charset") {
			seenCharset = true
		}
		out = appendString(out, prm.name)
		out = append(out, ' ')
		out = appendString(out, prm.value)
	}
	if defaultCharset && !seenCharset {
		if len(params) > 0 {
			out = append(out, ' ')
		}
		out = append(out, `"charset" "us-ascii"`...)
	}
	return append(out, ')')
}
