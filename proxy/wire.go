package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// The relay reads both directions of the IMAP stream as units: one command or one response, i.e. a line plus,
// for every line that ends in a literal announcement ({n}, {n+}, ~{n}, ~{n+}; RFC 9051 section 4.3, RFC 7888,
// RFC 3516), the n bytes that follow it and the next line. A unit is kept as the bytes that were on the wire,
// so that a unit the relay does not change is forwarded byte for byte; literal data is skipped by its length
// and never interpreted.

// maxLine bounds one line (without literal data) in either direction.
const maxLine = 1 << 20

var errLineTooLong = errors.New("proxy: line too long")

// litMarker describes a literal announcement at the end of a line.
type litMarker struct {
	size    int64
	nonSync bool // {n+}
	binary  bool // ~{n} (literal8)
	at      int  // offset of '{' or '~' in the line
}

// readLine reads one line including its CRLF (a bare LF is accepted) from br, at most maxLine bytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > maxLine {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		if err == nil {
			return line, nil
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// peekLine is readLine without the copy when the line fits in br's buffer: the result is valid only until
// the next read from br.
func peekLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == nil {
		return line, nil
	}
	if err != bufio.ErrBufferFull {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	rest, err := readLine(br)
	if err != nil {
		return nil, err
	}
	if len(line)+len(rest) > maxLine {
		return nil, errLineTooLong
	}
	return append(append([]byte(nil), line...), rest...), nil
}

// skipValueAt returns the offset after the value (atom, quoted string, literal or parenthesized list) that
// starts at b[i], without building tokens; -1 when it is cut short or malformed.
func skipValueAt(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '(':
			depth++
			i++
		case ')':
			if depth == 0 {
				return i
			}
			depth--
			i++
			if depth == 0 {
				return i
			}
		case ' ':
			if depth == 0 {
				return i
			}
			i++
		case '"':
			i++
			for i < len(b) && b[i] != '"' {
				if b[i] == '\\' {
					i++
				}
				if i < len(b) && (b[i] == '\r' || b[i] == '\n') {
					return -1
				}
				i++
			}
			if i >= len(b) {
				return -1
			}
			i++
			if depth == 0 {
				return i
			}
		case '~', '{':
			j := i
			if c == '~' {
				j++
			}
			if j >= len(b) || b[j] != '{' {
				i++ // an atom character
				continue
			}
			nl := bytes.IndexByte(b[j:], '\n')
			if nl < 0 {
				return -1
			}
			m, ok := literalAt(b[i : j+nl+1])
			if !ok || m.at != 0 {
				return -1
			}
			end := j + nl + 1 + int(m.size)
			if m.size > int64(len(b)) || end > len(b) {
				return -1
			}
			i = end
			if depth == 0 {
				return i
			}
		case '\r', '\n':
			if depth > 0 {
				return -1
			}
			return i
		default:
			i++
		}
	}
	if depth > 0 {
		return -1
	}
	return i
}

// trimEOL returns line without its CRLF or LF.
func trimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}

// literalAt reports the literal announced at the end of line (which includes its line break), if any.
func literalAt(line []byte) (litMarker, bool) {
	l := trimEOL(line)
	if len(l) < 3 || l[len(l)-1] != '}' {
		return litMarker{}, false
	}
	open := bytes.LastIndexByte(l, '{')
	if open < 0 {
		return litMarker{}, false
	}
	num := l[open+1 : len(l)-1]
	m := litMarker{at: open}
	if bytes.HasSuffix(num, []byte("+")) || bytes.HasSuffix(num, []byte("-")) {
		// {n-} is not valid syntax; only {n+} (RFC 7888 LITERAL+ and LITERAL-) is.
		if num[len(num)-1] == '-' {
			return litMarker{}, false
		}
		m.nonSync = true
		num = num[:len(num)-1]
	}
	if len(num) == 0 || len(num) > 19 {
		return litMarker{}, false
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return litMarker{}, false
		}
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return litMarker{}, false
	}
	m.size = n
	if open > 0 && l[open-1] == '~' {
		m.binary = true
		m.at = open - 1
	}
	return m, true
}

// unit is one command or response as read from the wire: lines and literal data, inline.
type unit []byte

// appendN appends exactly n bytes read from r to b.
func appendN(b []byte, r io.Reader, n int64) ([]byte, error) {
	start := len(b)
	b = slices.Grow(b, int(n))[:start+int(n)] // no temporary of n bytes: a 50 MB literal costs 50 MB
	if _, err := io.ReadFull(r, b[start:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// scanner walks the tokens of a unit. Literals are taken whole by their announced length.
type scanner struct {
	b   []byte
	pos int
}

// token kinds
const (
	tokEOF = iota
	tokAtom
	tokQuoted
	tokLiteral
	tokOpen  // (
	tokClose // )
	tokEOL   // CRLF
)

// token is one lexical item of a unit: its kind, its bytes on the wire [start,end), and for strings the value.
type token struct {
	kind       int
	start, end int
	val        []byte // atom text, unescaped quoted string or literal data
}

func (s *scanner) skipSpaces() {
	for s.pos < len(s.b) && s.b[s.pos] == ' ' {
		s.pos++
	}
}

// atomStop reports whether c ends an atom. Brackets are part of an atom here (BODY[...] is read as one token
// by fetchItem); ']' too, so that response codes like [UIDNEXT 5] come as atoms "[UIDNEXT" and "5]".
func atomStop(c byte) bool {
	return c == ' ' || c == '(' || c == ')' || c == '\r' || c == '\n' || c == '"' || c == '{'
}

// next returns the next token.
func (s *scanner) next() (token, error) {
	s.skipSpaces()
	if s.pos >= len(s.b) {
		return token{kind: tokEOF, start: s.pos, end: s.pos}, nil
	}
	start := s.pos
	switch c := s.b[s.pos]; {
	case c == '\r' || c == '\n':
		if c == '\r' {
			s.pos++
		}
		if s.pos < len(s.b) && s.b[s.pos] == '\n' {
			s.pos++
		}
		return token{kind: tokEOL, start: start, end: s.pos}, nil
	case c == '(':
		s.pos++
		return token{kind: tokOpen, start: start, end: s.pos}, nil
	case c == ')':
		s.pos++
		return token{kind: tokClose, start: start, end: s.pos}, nil
	case c == '"':
		return s.quoted()
	case c == '{' || c == '~' && s.pos+1 < len(s.b) && s.b[s.pos+1] == '{':
		return s.literal()
	default:
		for s.pos < len(s.b) && !atomStop(s.b[s.pos]) {
			s.pos++
		}
		return token{kind: tokAtom, start: start, end: s.pos, val: s.b[start:s.pos]}, nil
	}
}

func (s *scanner) quoted() (token, error) {
	start := s.pos
	s.pos++
	escaped := false
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case '\\':
			if s.pos+1 >= len(s.b) {
				return token{}, errors.New("proxy: unterminated quoted string")
			}
			escaped = true
			s.pos += 2
			continue
		case '"':
			s.pos++
			val := s.b[start+1 : s.pos-1]
			if escaped {
				val = unescape(val)
			}
			return token{kind: tokQuoted, start: start, end: s.pos, val: val}, nil
		case '\r', '\n':
			return token{}, errors.New("proxy: line break in quoted string")
		}
		s.pos++
	}
	return token{}, errors.New("proxy: unterminated quoted string")
}

// unescape removes the backslashes of a quoted string's content (RFC 9051 section 4.3).
func unescape(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			i++
		}
		out = append(out, b[i])
	}
	return out
}

func (s *scanner) literal() (token, error) {
	start := s.pos
	if s.b[s.pos] == '~' {
		s.pos++
	}
	end := bytes.IndexByte(s.b[s.pos:], '\n')
	if end < 0 {
		return token{}, errors.New("proxy: literal without line break")
	}
	line := s.b[start : s.pos+end+1]
	m, ok := literalAt(line)
	if !ok || m.at != 0 {
		return token{}, fmt.Errorf("proxy: bad literal announcement %q", trimEOL(line))
	}
	dataStart := s.pos + end + 1
	if int64(len(s.b)-dataStart) < m.size {
		return token{}, errors.New("proxy: literal shorter than announced")
	}
	s.pos = dataStart + int(m.size)
	return token{kind: tokLiteral, start: start, end: s.pos, val: s.b[dataStart:s.pos]}, nil
}

// skipValue skips one value (an atom, string or parenthesized list, nested) whose first token is t, and
// returns the offset after it.
func (s *scanner) skipValue(t token) (int, error) {
	if t.kind != tokOpen {
		if t.kind == tokEOF || t.kind == tokEOL || t.kind == tokClose {
			return 0, errors.New("proxy: value expected")
		}
		return t.end, nil
	}
	depth := 1
	for depth > 0 {
		t, err := s.next()
		if err != nil {
			return 0, err
		}
		switch t.kind {
		case tokOpen:
			depth++
		case tokClose:
			depth--
		case tokEOF, tokEOL:
			return 0, errors.New("proxy: unterminated list")
		}
	}
	return s.pos, nil
}

// astring returns the value of an atom, quoted string or literal token.
func astring(t token) ([]byte, bool) {
	switch t.kind {
	case tokAtom, tokQuoted, tokLiteral:
		return t.val, true
	}
	return nil, false
}
