package imapfmt

import "bytes"

// This file holds the two lexical layers below ENVELOPE and BODYSTRUCTURE: the header field splitter
// (RFC 5322 section 2.2) and the RFC 822 / MIME token parser (RFC 5322 section 3.2, RFC 2045 section 5.1).
// Both follow Dovecot's lib-mail (message-header-parser.c, rfc822-parser.c) decision for decision, including
// how they recover from malformed input, because the FETCH values must come out as Dovecot writes them.

// replacementChar is what Dovecot puts in place of NUL bytes in header values, quoted strings and comments.
const replacementChar = "\uFFFD"

// maxHeaderNameLen is the longest field name Dovecot accepts; a line with a longer name is taken as a value
// without a name (RFC 5322 sections 2.1.1 and 2.2 allow 998 octets per line).
const maxHeaderNameLen = 1000

// Dovecot's limits on header sizes (MESSAGE_HEADER_BLOCK_DEFAULT_MAX_SIZE and
// MESSAGE_PARSER_DEFAULT_ALL_HEADERS_MAX_SIZE, from the fix of CVE-2024-23185): the values of one header
// block keep at most 10 MB, those of all the headers of a message at most 50 MB; the rest is cut off.
const (
	maxHeaderBlockSize = 10 << 20
	maxAllHeadersSize  = 50 << 20
)

// msgSize counts octets and lines of a header or body the way Dovecot does: virtual counts the octets with
// every line ending as CRLF (the size IMAP reports, RFC 3501 section 2.3.4), lines counts LFs.
type msgSize struct {
	virtual, lines int64
}

func (s *msgSize) add(o msgSize) {
	s.virtual += o.virtual
	s.lines += o.lines
}

// headerLine is one physical line of a header as returned by headerParser.next.
type headerLine struct {
	// name is the field name with the white space before the colon removed and cut at a NUL, nil for a line
	// without a colon or with an overlong name. Continuation lines keep the name of their field.
	name []byte
	// value is the field's value: the first line's text after the colon and its leading white space, then,
	// for the fields the parser was asked to unfold, every continuation line preceded by "\n" (RFC 5322
	// section 2.2.3). It is complete on the field's last line, when continues is false.
	value []byte
	// continues is set when the next line is a continuation (starts with SP or HTAB).
	continues bool
	// eoh marks the empty line that ends the header.
	eoh bool
	// newline is set when the line ends with a line break rather than the end of the data.
	newline bool
	// nameMiddle is the length of the name and of the text between it and the value; lineValue the length
	// of this line's value. Dovecot counts them against maxAllHeadersSize.
	nameMiddle, lineValue int
}

// headerParser splits a header into lines like Dovecot's message_parse_header_next with the flags Dovecot's
// mail storage uses (skip the white space after the colon, drop CRs from unfolded values), including the
// header size limit of its CVE-2024-23185 fix as Debian's Dovecot 2.3.19 package has it (the line values of
// a header block, line breaks not counted, keep at most maxSize octets) and a quirk of that fix: a
// continuation line of a single white space character is appended without the line break before it.
type headerParser struct {
	d    []byte
	pos  int
	size *msgSize
	line headerLine
	done bool
	// unfold tells which fields' continuation lines are kept in headerLine.value; in Dovecot they are those
	// a consumer asked the full value of. unfoldField is its answer for the current field.
	unfold      func(name []byte) bool
	unfoldField bool
	// maxSize is the most value octets the header block may keep, total what its lines kept so far.
	maxSize, total int
}

func newHeaderParser(d []byte, pos int, size *msgSize, unfold func(name []byte) bool) *headerParser {
	*size = msgSize{}
	return &headerParser{d: d, pos: pos, size: size, unfold: unfold, maxSize: maxHeaderBlockSize}
}

// next returns the next header line, or nil after the empty line that ends the header or at the end of data.
// The returned line is reused by the following call.
func (h *headerParser) next() *headerLine {
	if h.done || h.pos >= len(h.d) {
		return nil
	}
	l := &h.line
	continued := l.continues
	if !continued {
		l.value = l.value[:0]
	}
	rest := h.d[h.pos:]
	var size, skip int
	newline, continues := false, false
	lf := bytes.IndexByte(rest, '\n')
	if lf < 0 {
		// The header ends without a line ending at the end of the data.
		size, skip = len(rest), len(rest)
	} else {
		continues = lf+1 < len(rest) && isLWSP(rest[lf+1])
		h.size.lines++
		if lf == 0 || rest[lf-1] != '\r' {
			h.size.virtual++
			size = lf
		} else {
			size = lf - 1
		}
		newline = true
		skip = lf + 1
	}
	h.size.virtual += int64(skip)
	h.pos += skip

	line := rest[:size]
	l.continues, l.newline, l.eoh = continues, newline, false
	var value []byte
	switch {
	case size == 0 && !continued:
		l.eoh, l.continues = true, false
		l.name, l.nameMiddle = nil, 0
		h.done = true
	case continued:
		value = line
	default:
		value = h.splitField(line)
		h.unfoldField = l.name != nil && h.unfold(l.name)
	}
	kept := 0
	if h.total < h.maxSize {
		kept = min(len(value), h.maxSize-h.total)
		h.total += kept
	}
	l.lineValue = kept
	switch {
	case !continued:
		l.value = append(l.value, value[:kept]...)
	case h.unfoldField:
		if kept > 1 {
			l.value = append(l.value, '\n')
		}
		l.value = append(l.value, value[:kept]...)
	}
	return l
}

// splitField sets the name of the line that starts a field and returns its value.
func (h *headerParser) splitField(line []byte) []byte {
	l := &h.line
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		l.name, l.nameMiddle = nil, 0
		return line
	}
	valueStart := colon + 1
	ws := 0
	for valueStart+ws < len(line) && isLWSP(line[valueStart+ws]) {
		ws++
	}
	if valueStart+ws == len(line) && ws > 0 {
		// A value of only white space keeps all but the first white space character.
		ws = 1
	}
	valueStart += ws
	nameEnd := colon
	for nameEnd > 0 && isLWSP(line[nameEnd-1]) {
		nameEnd--
	}
	if nameEnd > maxHeaderNameLen {
		l.name, l.nameMiddle = nil, 0
		return line
	}
	// Dovecot compares names as C strings: they end at a NUL.
	l.name, l.nameMiddle = cstr(line[:nameEnd]), valueStart
	return line[valueStart:]
}

func isLWSP(c byte) bool { return c == ' ' || c == '\t' }

// cstr cuts b at its first NUL: Dovecot handles header names and several parsed values as C strings.
func cstr(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// nameIs reports whether the header field name is name, compared like C strcasecmp.
func nameIs(hdrName []byte, name string) bool { return asciiEqualFold(hdrName, name) }

// isContentField reports a field whose name starts with "Content-" (RFC 2045 section 9).
func isContentField(name []byte) bool {
	return len(name) >= 8 && asciiEqualFold(name[:8], "Content-")
}

// asciiEqualFold compares like C strcasecmp in the C locale: only ASCII letters fold.
func asciiEqualFold[S ~string | ~[]byte](a S, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if asciiLower(a[i]) != asciiLower(b[i]) {
			return false
		}
	}
	return true
}

func asciiLower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// headerStrdup copies a header value as Dovecot's message_header_strdup does: NULs become U+FFFD.
func headerStrdup(v []byte) string {
	if bytes.IndexByte(v, 0) < 0 {
		return string(v)
	}
	return string(bytes.ReplaceAll(v, []byte{0}, []byte(replacementChar)))
}

// atext classes of every octet, as Dovecot's rfc822_atext_chars: 0 for specials, controls and SP, 1 for
// atext, 2 for letters, digits and 8-bit octets, 4 for atext that is a MIME tspecial (RFC 2045 section 5.1).
var atextClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case c >= 0x80, c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
			t[c] = 2
		case bytes.IndexByte([]byte("!#$%&'*+-^_`{|}~"), byte(c)) >= 0:
			t[c] = 1
		case c == '/' || c == '=' || c == '?':
			t[c] = 4
		}
	}
	return t
}()

// isAtext reports RFC 5322 atext (8-bit octets included).
func isAtext(c byte) bool { return atextClass[c] != 0 }

// isTokenChar reports a MIME token character other than '.' (RFC 2045 section 5.1).
func isTokenChar(c byte) bool { return atextClass[c]&3 != 0 }

// lexer is Dovecot's rfc822_parser_context. Its parse methods return 1 when more data follows, 0 at the end
// of the data and -1 on invalid input, and skip the CFWS after what they parsed.
type lexer struct {
	d   []byte
	pos int
	// lastComment, when not nil, receives the text of the last comment skipped.
	lastComment *[]byte
	// replaceNUL makes quoted strings, comments and domain literals carry U+FFFD for NUL.
	replaceNUL bool
}

func (p *lexer) more() bool { return p.pos < len(p.d) }

// cur returns the current octet, or 0 at the end of the data.
func (p *lexer) cur() byte {
	if p.pos < len(p.d) {
		return p.d[p.pos]
	}
	return 0
}

func (p *lexer) status() int {
	if p.more() {
		return 1
	}
	return 0
}

// skipComment skips a comment (RFC 5322 section 3.2.2) starting at '('.
func (p *lexer) skipComment() int {
	if p.lastComment != nil {
		*p.lastComment = (*p.lastComment)[:0]
	}
	level := 1
	p.pos++
	start := p.pos
	for ; p.pos < len(p.d); p.pos++ {
		switch p.d[p.pos] {
		case 0:
			if p.lastComment != nil && p.replaceNUL {
				*p.lastComment = append(append(*p.lastComment, p.d[start:p.pos]...), replacementChar...)
				start = p.pos + 1
			}
		case '(':
			level++
		case ')':
			level--
			if level == 0 {
				if p.lastComment != nil {
					*p.lastComment = append(*p.lastComment, p.d[start:p.pos]...)
				}
				p.pos++
				return p.status()
			}
		case '\n':
			if p.lastComment == nil {
				break
			}
			end := p.pos
			if end > start && p.d[end-1] == '\r' {
				end--
			}
			*p.lastComment = append(*p.lastComment, p.d[start:end]...)
			start = p.pos + 1
		case '\\':
			p.pos++
			if p.pos >= len(p.d) {
				return -1
			}
			if c := p.d[p.pos]; c == '\r' || c == '\n' || c == 0 {
				p.pos--
				break
			}
			if p.lastComment != nil {
				*p.lastComment = append(*p.lastComment, p.d[start:p.pos-1]...)
			}
			start = p.pos
		}
	}
	return -1
}

// skipLWSP skips white space, line breaks and comments.
func (p *lexer) skipLWSP() int {
	for p.pos < len(p.d) {
		switch p.d[p.pos] {
		case ' ', '\t', '\r', '\n':
			p.pos++
			continue
		case '(':
			if p.skipComment() < 0 {
				return -1
			}
			continue
		}
		break
	}
	return p.status()
}

func (p *lexer) parseAtom(str *[]byte) int {
	if !p.more() || !isAtext(p.d[p.pos]) {
		return -1
	}
	start := p.pos
	for p.pos++; p.pos < len(p.d); p.pos++ {
		if !isAtext(p.d[p.pos]) {
			*str = append(*str, p.d[start:p.pos]...)
			return p.skipLWSP()
		}
	}
	*str = append(*str, p.d[start:]...)
	return 0
}

// parseDotAtom parses a dot-atom, allowing CFWS around the dots as RFC 822 did.
func (p *lexer) parseDotAtom(str *[]byte) int {
	if !p.more() || !isAtext(p.d[p.pos]) {
		return -1
	}
	start := p.pos
	for p.pos++; p.pos < len(p.d); {
		if isAtext(p.d[p.pos]) {
			p.pos++
			continue
		}
		if start == p.pos {
			return -1
		}
		*str = append(*str, p.d[start:p.pos]...)
		if ret := p.skipLWSP(); ret <= 0 {
			return ret
		}
		if p.d[p.pos] != '.' {
			return 1
		}
		p.pos++
		*str = append(*str, '.')
		if p.skipLWSP() <= 0 {
			return -1
		}
		start = p.pos
	}
	*str = append(*str, p.d[start:]...)
	return 0
}

// parseMimeToken parses a MIME token (RFC 2045 section 5.1), possibly empty.
func (p *lexer) parseMimeToken(str *[]byte) int {
	start := p.pos
	for ; p.pos < len(p.d); p.pos++ {
		if c := p.d[p.pos]; !isTokenChar(c) && c != '.' {
			*str = append(*str, p.d[start:p.pos]...)
			return p.skipLWSP()
		}
	}
	*str = append(*str, p.d[start:]...)
	return 0
}

// parseQuotedString parses a quoted-string starting at '"' (RFC 5322 section 3.2.4) into its content.
func (p *lexer) parseQuotedString(str *[]byte) int {
	p.pos++
	start := p.pos
	for ; p.pos < len(p.d); p.pos++ {
		switch p.d[p.pos] {
		case 0:
			if p.replaceNUL {
				*str = append(append(*str, p.d[start:p.pos]...), replacementChar...)
				start = p.pos + 1
			}
		case '"':
			*str = append(*str, p.d[start:p.pos]...)
			p.pos++
			return p.skipLWSP()
		case '\n':
			end := p.pos
			if end > start && p.d[end-1] == '\r' {
				end--
			}
			*str = append(*str, p.d[start:end]...)
			start = p.pos + 1
		case '\\':
			p.pos++
			if p.pos >= len(p.d) {
				return -1
			}
			if c := p.d[p.pos]; c == '\r' || c == '\n' || c == 0 {
				p.pos--
				break
			}
			*str = append(*str, p.d[start:p.pos-1]...)
			start = p.pos
		}
	}
	return -1
}

// parseAtomOrDot parses a run of atext and dots, possibly empty.
func (p *lexer) parseAtomOrDot(str *[]byte) int {
	start := p.pos
	for ; p.pos < len(p.d); p.pos++ {
		if c := p.d[p.pos]; !isAtext(c) && c != '.' {
			*str = append(*str, p.d[start:p.pos]...)
			return p.skipLWSP()
		}
	}
	*str = append(*str, p.d[start:]...)
	return 0
}

// parsePhrase parses a phrase (RFC 5322 section 3.2.5, with obs-phrase), joining its words with single spaces.
func (p *lexer) parsePhrase(str *[]byte) int {
	if !p.more() {
		return 0
	}
	if p.d[p.pos] == '.' {
		return -1
	}
	for {
		var ret int
		if p.d[p.pos] == '"' {
			ret = p.parseQuotedString(str)
		} else {
			ret = p.parseAtomOrDot(str)
		}
		if ret <= 0 {
			return ret
		}
		if c := p.d[p.pos]; !isAtext(c) && c != '"' && c != '.' {
			break
		}
		*str = append(*str, ' ')
	}
	return p.skipLWSP()
}

// parseDomainLiteral parses a domain-literal starting at '[' (RFC 5322 section 3.4.1), brackets and
// backslashes included.
func (p *lexer) parseDomainLiteral(str *[]byte) int {
	start := p.pos
	for p.pos++; p.pos < len(p.d); p.pos++ {
		switch p.d[p.pos] {
		case 0:
			if p.replaceNUL {
				*str = append(append(*str, p.d[start:p.pos]...), replacementChar...)
				start = p.pos + 1
			}
		case '[':
			return -1
		case ']':
			*str = append(*str, p.d[start:p.pos+1]...)
			p.pos++
			return p.skipLWSP()
		case '\n':
			end := p.pos
			if end > start && p.d[end-1] == '\r' {
				end--
			}
			*str = append(*str, p.d[start:end]...)
			start = p.pos + 1
		case '\\':
			p.pos++
			if p.pos >= len(p.d) {
				return -1
			}
			if c := p.d[p.pos]; c == '\r' || c == '\n' || c == 0 {
				*str = append(*str, p.d[start:p.pos]...)
				start = p.pos
				p.pos--
			}
		}
	}
	return -1
}

// parseDomain parses "@" domain.
func (p *lexer) parseDomain(str *[]byte) int {
	p.pos++
	if p.skipLWSP() <= 0 {
		return -1
	}
	if p.d[p.pos] == '[' {
		return p.parseDomainLiteral(str)
	}
	return p.parseDotAtom(str)
}

// parseContentType parses the "type/subtype" of a Content-Type value (RFC 2045 section 5.1) into str. On
// failure it returns -1 and leaves in str what Dovecot keeps: the type alone when the value ends right after
// it, otherwise nothing.
func (p *lexer) parseContentType(str *[]byte) int {
	if p.skipLWSP() <= 0 {
		return -1
	}
	if p.parseMimeToken(str) <= 0 || len(*str) == 0 {
		return -1
	}
	if p.d[p.pos] != '/' {
		*str = (*str)[:0]
		return -1
	}
	p.pos++
	if p.skipLWSP() <= 0 {
		*str = (*str)[:0]
		return -1
	}
	*str = append(*str, '/')
	subStart := len(*str)
	ret := p.parseMimeToken(str)
	if ret < 0 || len(*str) == subStart || (p.more() && p.d[p.pos] != ';') {
		*str = (*str)[:0]
		return -1
	}
	return ret
}

// parseContentParam parses one ";" attribute "=" value (RFC 2045 section 5.1). It returns 1 with the key and
// the unquoted value, 0 at the end of the data or -1 on invalid input.
func (p *lexer) parseContentParam(value *[]byte) (key []byte, ret int) {
	*value = (*value)[:0]
	if !p.more() {
		return nil, 0
	}
	if p.d[p.pos] != ';' {
		return nil, -1
	}
	p.pos++
	if p.skipLWSP() <= 0 {
		return nil, -1
	}
	if p.parseMimeToken(&key) <= 0 {
		return nil, -1
	}
	if p.d[p.pos] != '=' {
		return nil, -1
	}
	p.pos++
	if ret = p.skipLWSP(); ret <= 0 {
		// no value
	} else if p.d[p.pos] == '"' {
		ret = p.parseQuotedString(value)
	} else if p.d[p.pos] == '=' {
		// Dovecot's workaround for unquoted encoded words: name==?utf-8?b?...?=
		for p.pos < len(p.d) {
			c := p.d[p.pos]
			if c == ';' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				break
			}
			*value = append(*value, c)
			p.pos++
		}
	} else {
		ret = p.parseMimeToken(value)
	}
	if ret < 0 {
		return nil, -1
	}
	if key == nil {
		key = []byte{}
	}
	return key, 1
}
