package proxy

import (
	"bytes"
	"strconv"
	"strings"
)

// A search context the relay keeps (context.go) must judge new encrypted messages itself, for the whole search
// program: the content keys over the served copy, the other keys from what the relay knows of the message.
// progNode is that program as a tree, built only from the keys the relay can evaluate for one message without
// the upstream's session: ALL, the flag keys (RFC 9051 section 6.4.4: ANSWERED, DELETED, DRAFT, FLAGGED, SEEN,
// their UN- forms, KEYWORD, UNKEYWORD), UID with a set of numbers, NOT, OR, parenthesised lists and the keys
// the relay rewrote (BODY, TEXT, LARGER, SMALLER, FROM, TO, CC, BCC, SUBJECT, HEADER). Any other key (dates,
// sequence numbers, $, RECENT, MODSEQ, "*" in a set, ...) makes the program unsupported: the
// relay then refuses RETURN (UPDATE) rather than let the context drift.
type progNode struct {
	op   byte // 'a' and (kids), 'o' or (kids[0], kids[1]), 'n' not (kids[0]), 'T' all, 'f' flag, 'u' uid, 'c' content
	kids []*progNode
	flag string      // 'f': the flag or keyword, lower case
	neg  bool        // 'f': UN- form
	set  [][2]uint32 // 'u': inclusive ranges
	key  int         // 'c': index into the context's keys
}

var flagKeys = map[string]string{
	"ANSWERED": `\answered`, "DELETED": `\deleted`, "DRAFT": `\draft`, "FLAGGED": `\flagged`, "SEEN": `\seen`,
}

// parseContextProgram parses the search program at s; keyAt maps the start offset of each rewritten key to
// its index. ok is false when the program holds a key the relay cannot evaluate itself.
func parseContextProgram(s *scanner, keyAt map[int]int) (*progNode, bool) {
	n, ok := parseProgList(s, 0, keyAt)
	if !ok {
		return nil, false
	}
	if t, _ := s.next(); t.kind != tokEOL && t.kind != tokEOF {
		return nil, false
	}
	return n, true
}

func parseProgList(s *scanner, depth int, keyAt map[int]int) (*progNode, bool) {
	and := &progNode{op: 'a'}
	for {
		save := s.pos
		t, err := s.next()
		if err != nil {
			return nil, false
		}
		if t.kind == tokEOL || t.kind == tokEOF || t.kind == tokClose {
			s.pos = save
			return and, len(and.kids) > 0
		}
		k, ok := parseProgKey(s, t, depth, keyAt)
		if !ok {
			return nil, false
		}
		and.kids = append(and.kids, k)
	}
}

func parseProgKey(s *scanner, t token, depth int, keyAt map[int]int) (*progNode, bool) {
	if depth > 100 {
		return nil, false
	}
	if t.kind == tokOpen {
		n, ok := parseProgList(s, depth+1, keyAt)
		if !ok {
			return nil, false
		}
		if c, err := s.next(); err != nil || c.kind != tokClose {
			return nil, false
		}
		return n, true
	}
	if t.kind != tokAtom {
		return nil, false
	}
	name := strings.ToUpper(string(t.val))
	if i, ok := keyAt[t.start]; ok {
		for range searchArity[name] {
			if a, err := s.next(); err != nil || a.kind == tokEOL || a.kind == tokEOF {
				return nil, false
			}
		}
		return &progNode{op: 'c', key: i}, true
	}
	arg := func() (string, bool) {
		a, err := s.next()
		if err != nil {
			return "", false
		}
		v, ok := astring(a)
		return string(v), ok
	}
	switch name {
	case "ALL":
		return &progNode{op: 'T'}, true
	case "NOT":
		n, err := s.next()
		if err != nil {
			return nil, false
		}
		k, ok := parseProgKey(s, n, depth+1, keyAt)
		return &progNode{op: 'n', kids: []*progNode{k}}, ok
	case "OR":
		o := &progNode{op: 'o'}
		for range 2 {
			n, err := s.next()
			if err != nil {
				return nil, false
			}
			k, ok := parseProgKey(s, n, depth+1, keyAt)
			if !ok {
				return nil, false
			}
			o.kids = append(o.kids, k)
		}
		return o, true
	case "KEYWORD", "UNKEYWORD":
		v, ok := arg()
		return &progNode{op: 'f', flag: strings.ToLower(v), neg: name == "UNKEYWORD"}, ok
	case "UID":
		v, ok := arg()
		if !ok {
			return nil, false
		}
		set, ok := parseNumSet(v)
		return &progNode{op: 'u', set: set}, ok
	}
	if f, ok := flagKeys[name]; ok {
		return &progNode{op: 'f', flag: f}, true
	}
	if f, ok := flagKeys[strings.TrimPrefix(name, "UN")]; ok {
		return &progNode{op: 'f', flag: f, neg: true}, true
	}
	return nil, false
}

// parseNumSet parses a set of numbers without "*" or "$" ("1:3,7").
func parseNumSet(v string) ([][2]uint32, bool) {
	var out [][2]uint32
	for part := range strings.SplitSeq(v, ",") {
		a, b, isRange := strings.Cut(part, ":")
		x, err := strconv.ParseUint(a, 10, 32)
		if err != nil {
			return nil, false
		}
		y := x
		if isRange {
			if y, err = strconv.ParseUint(b, 10, 32); err != nil {
				return nil, false
			}
		}
		out = append(out, [2]uint32{uint32(min(x, y)), uint32(max(x, y))})
	}
	return out, len(out) > 0
}

// eval reports whether message e matches the program.
func (n *progNode) eval(e *extraMsg) bool {
	switch n.op {
	case 'a':
		for _, k := range n.kids {
			if !k.eval(e) {
				return false
			}
		}
		return true
	case 'o':
		return n.kids[0].eval(e) || n.kids[1].eval(e)
	case 'n':
		return !n.kids[0].eval(e)
	case 'T':
		return true
	case 'f':
		return e.flags[n.flag] != n.neg
	case 'u':
		for _, r := range n.set {
			if e.uid >= r[0] && e.uid <= r[1] {
				return true
			}
		}
		return false
	case 'c':
		return n.key < len(e.hits) && e.hits[n.key]
	}
	return false
}

// parseFlagList reads the flags of "FLAGS (...)" in a FETCH response line, lower case; ok is false when the
// line has no FLAGS item.
func parseFlagList(line []byte) (map[string]bool, bool) {
	i := indexFold(line, "FLAGS (")
	if i < 0 {
		return nil, false
	}
	rest := line[i+len("FLAGS ("):]
	j := bytes.IndexByte(rest, ')')
	if j < 0 {
		return nil, false
	}
	out := map[string]bool{}
	for f := range strings.FieldsSeq(strings.ToLower(string(rest[:j]))) {
		out[f] = true
	}
	return out, true
}
