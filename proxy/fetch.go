package proxy

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
)

// FETCH through the relay (RFC 9051 section 6.4.5, RFC 3516 BINARY).
//
// The client's FETCH goes upstream as it is, except that a sequence-number FETCH asking for a body-dependent
// item gets UID added (prepareFetch), so that every response that may need rewriting names its message. Each
// FETCH response is then looked at (fetchResponse): when it carries a body-dependent item of a message the
// index says is a candidate, those items are computed from the served copy (the Rewriter's bytes) and every
// other item (UID, FLAGS, MODSEQ, INTERNALDATE, ...) is kept as the server sent it, in the server's order;
// any other response passes byte for byte, minus the UID the relay added.

// fetchReq is what the relay remembers of a FETCH command.
type fetchReq struct {
	addedUID bool
	sections []sectionReq // BODY[...] and BINARY[...] items, for their partial lengths
	// synth: a UID FETCH of encrypted messages whose served copies are all cached went upstream without its
	// body-dependent items (bodyNames, in response form); the relay adds them to each response, once per UID
	// of the set.
	synth     bool
	bodyNames []string
	uids      map[uint32]bool
	answered  map[uint32]bool

	// parsedMu guards parsed: the response forms of section items (BODY[HEADER.FIELDS (...)] ...) parsed
	// once per command instead of once per message (responseSection).
	parsedMu sync.Mutex
	parsed   map[string]parsedSection

	// meta holds stored metadata read ahead (storedMeta, upstream reader only): of every message of mailbox
	// metaBox with a UID in [metaFrom, metaTo] that has some.
	meta             map[uint32]ServedMeta
	metaBox          mailboxRef
	metaFrom, metaTo uint32
}

type parsedSection struct {
	sr sectionReq
	ok bool
}

// responseSection is parseSectionItem(name, false), remembered in req (which may be nil) for the command's
// other messages: a header sync names the same section in every response.
func responseSection(req *fetchReq, name []byte) (sectionReq, bool) {
	if req == nil {
		return parseSectionItem(name, false)
	}
	req.parsedMu.Lock()
	defer req.parsedMu.Unlock()
	if p, ok := req.parsed[string(name)]; ok {
		return p.sr, p.ok
	}
	sr, ok := parseSectionItem(name, false)
	if req.parsed == nil {
		req.parsed = map[string]parsedSection{}
	}
	if len(req.parsed) < 64 {
		req.parsed[string(name)] = parsedSection{sr, ok}
	}
	return sr, ok
}

// sectionReq is one requested section.
type sectionReq struct {
	kind   string // "BODY", "BINARY", "BINARY.SIZE"
	sec    imap.FetchItemBodySection
	origin int64
	length int64 // -1: no partial
}

// bodyDependentItem reports whether a FETCH item (upper case, request or response form) is computed from
// the message's content.
func bodyDependentItem(name string) bool {
	switch name {
	case "RFC822", "RFC822.SIZE", "RFC822.HEADER", "RFC822.TEXT", "ENVELOPE", "BODY", "BODYSTRUCTURE",
		"ALL", "FAST", "FULL":
		return true
	}
	return strings.HasPrefix(name, "BODY[") || strings.HasPrefix(name, "BODY.PEEK[") ||
		strings.HasPrefix(name, "BINARY[") || strings.HasPrefix(name, "BINARY.PEEK[") ||
		strings.HasPrefix(name, "BINARY.SIZE[")
}

// fetchAttEnd returns the end of the fetch attribute (item name) starting at b[pos]: atom characters, a
// bracketed section that may hold spaces, parentheses and quoted strings, and a <partial>.
func fetchAttEnd(b []byte, pos int) int {
	i := pos
	for i < len(b) {
		switch c := b[i]; c {
		case '[':
			i = sectionEnd(b, i)
			continue
		case ' ', '(', ')', '\r', '\n', '{', '"':
			return i
		}
		i++
	}
	return i
}

// sectionEnd returns the offset after the ']' that closes the '[' at b[open] (quoted strings skipped).
func sectionEnd(b []byte, open int) int {
	inQuote := false
	for i := open + 1; i < len(b); i++ {
		c := b[i]
		switch {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == ']':
			return i + 1
		case c == '\r' || c == '\n':
			return i
		}
	}
	return len(b)
}

// prepareFetch records what the relay needs of a FETCH command and returns the command to send upstream.
func (r *relay) prepareFetch(c *command, u unit) unit {
	s := &scanner{b: u}
	s.next() // tag
	isUID := false
	if t, _ := s.next(); strings.EqualFold(string(t.val), "UID") {
		isUID = true
		s.next()
	}
	if t, _ := s.next(); t.kind != tokAtom { // sequence set
		return u
	}
	s.skipSpaces()
	req := &fetchReq{}
	var names []string
	listStart, listEnd := s.pos, -1
	if s.pos < len(u) && u[s.pos] == '(' {
		s.pos++
		for {
			s.skipSpaces()
			if s.pos >= len(u) || u[s.pos] == ')' || u[s.pos] == '\r' || u[s.pos] == '\n' {
				break
			}
			end := fetchAttEnd(u, s.pos)
			if end == s.pos {
				return u
			}
			names = append(names, string(u[s.pos:end]))
			s.pos = end
		}
		listEnd = s.pos + 1
	} else {
		end := fetchAttEnd(u, s.pos)
		names = append(names, string(u[s.pos:end]))
		listEnd = end
	}
	hasUID, body := false, false
	for _, n := range names {
		up := strings.ToUpper(n)
		if up == "UID" {
			hasUID = true
		}
		if bodyDependentItem(up) {
			body = true
		}
		if sr, ok := parseSectionItem([]byte(n), true); ok {
			req.sections = append(req.sections, sr)
		}
	}
	c.fetch = req
	if isUID && body && listEnd <= len(u) {
		if out, ok := r.prepareCachedFetch(c, u, names, listStart, listEnd); ok {
			return out
		}
	}
	if isUID || hasUID || !body || listEnd > len(u) {
		return u
	}
	req.addedUID = true
	out := append([]byte(nil), u[:listStart]...)
	out = append(out, "(UID "...)
	out = append(out, strings.Join(expandMacros(names), " ")...)
	out = append(out, ')')
	return append(out, u[listEnd:]...)
}

// maxSynthUIDs bounds the UID set of a FETCH answered from cached served copies.
const maxSynthUIDs = 1000

// prepareCachedFetch sends a UID FETCH whose messages are all encrypted with cached served copies upstream
// without its body-dependent items: the ciphertext need not cross the network again (fetchUnit adds the items
// from the served copies). It applies only when the relay's view of the selected mailbox is current (no
// command in flight) and no item would set \Seen.
func (r *relay) prepareCachedFetch(c *command, u unit, names []string, listStart, listEnd int) (unit, bool) {
	if r.side == nil {
		return nil, false
	}
	probe := r.srv.opts.CacheProbe
	ms := r.srv.opts.MetaSource
	if probe == nil && ms == nil {
		return nil, false
	}
	r.mu.Lock()
	idle, m := len(r.pending) == 0, r.mbox
	r.mu.Unlock()
	if !idle || !m.ok {
		return nil, false
	}
	s := &scanner{b: u}
	s.next()
	s.next()
	s.next()
	set, err := s.next()
	if err != nil || set.kind != tokAtom {
		return nil, false
	}
	uids, ok := parseUIDSet(set.val, maxSynthUIDs)
	if !ok {
		return nil, false
	}
	var keep, bodyNames []string
	for _, n := range expandMacros(names) {
		up := strings.ToUpper(n)
		switch {
		case !bodyDependentItem(up):
			if up != "UID" {
				keep = append(keep, n)
			}
		case strings.HasPrefix(up, "BODY[") || strings.HasPrefix(up, "BINARY[") || up == "RFC822" || up == "RFC822.TEXT":
			return nil, false // sets \Seen (RFC 9051 section 6.4.5): the server must see it
		default:
			bodyNames = append(bodyNames, responseName(n))
		}
	}
	metaOK := ms != nil
	for _, n := range bodyNames {
		metaOK = metaOK && metaItem(n)
	}
	// A message qualifies when its served copy is cached, or when every item asked for is stored metadata.
	ready := func(ref MessageRef) bool {
		if probe != nil && probe.Cached(ref) {
			return true
		}
		if !metaOK {
			return false
		}
		_, ok := ms.Meta(ref)
		return ok
	}
	ix := r.srv.index(r.userName(), m)
	ix.mu.Lock()
	for _, uid := range uids {
		if uid > ix.checked || !ix.cands[uid] || !ready(r.ref(m, uid)) {
			ix.mu.Unlock()
			return nil, false
		}
	}
	ix.mu.Unlock()
	req := c.fetch
	req.synth, req.bodyNames = true, bodyNames
	req.uids, req.answered = make(map[uint32]bool, len(uids)), map[uint32]bool{}
	for _, uid := range uids {
		req.uids[uid] = true
	}
	out := append([]byte(nil), u[:listStart]...)
	out = append(out, "(UID"...)
	for _, n := range keep {
		out = append(out, ' ')
		out = append(out, n...)
	}
	out = append(out, ')')
	return append(out, u[listEnd:]...), true
}

// expandMacros replaces ALL, FAST and FULL by the items they stand for (RFC 9051 section 6.4.5).
func expandMacros(names []string) []string {
	var list []string
	for _, n := range names {
		switch strings.ToUpper(n) {
		case "ALL":
			list = append(list, "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")
		case "FAST":
			list = append(list, "FLAGS", "INTERNALDATE", "RFC822.SIZE")
		case "FULL":
			list = append(list, "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
		default:
			list = append(list, n)
		}
	}
	return list
}

// responseName is the name a server answers a requested item with: no .PEEK, a partial as <origin>.
func responseName(n string) string {
	up := strings.ToUpper(n)
	for _, k := range []string{"BODY.PEEK[", "BINARY.PEEK["} {
		if strings.HasPrefix(up, k) {
			n = n[:len(k)-len(".PEEK[")] + "[" + n[len(k):]
			break
		}
	}
	if i := strings.LastIndexByte(n, '<'); i > 0 && strings.HasSuffix(n, ">") && strings.LastIndexByte(n, ']') < i {
		if dot := strings.IndexByte(n[i:], '.'); dot > 0 {
			n = n[:i+dot] + ">"
		}
	}
	return n
}

// parseUIDSet expands an explicit UID set ("3,5:7"; no "*" or "$") of at most limit UIDs.
func parseUIDSet(b []byte, limit int) ([]uint32, bool) {
	var out []uint32
	for _, part := range strings.Split(string(b), ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		a, err1 := strconv.ParseUint(lo, 10, 32)
		z := a
		var err2 error
		if isRange {
			z, err2 = strconv.ParseUint(hi, 10, 32)
		}
		if err1 != nil || err2 != nil || a == 0 || z == 0 {
			return nil, false
		}
		if z < a {
			a, z = z, a
		}
		if z-a >= uint64(limit) || len(out)+int(z-a)+1 > limit {
			return nil, false
		}
		for v := a; v <= z; v++ {
			out = append(out, uint32(v))
		}
	}
	return out, len(out) > 0
}

// parseSectionItem parses BODY[...], BODY.PEEK[...], BINARY[...], BINARY.PEEK[...] and BINARY.SIZE[...]
// with an optional partial: <origin.length> in a request, <origin> in a response.
func parseSectionItem(name []byte, request bool) (sectionReq, bool) {
	open := bytes.IndexByte(name, '[')
	if open < 0 {
		return sectionReq{}, false
	}
	kind := strings.ToUpper(string(name[:open]))
	switch kind {
	case "BODY.PEEK":
		kind = "BODY"
	case "BINARY.PEEK":
		kind = "BINARY"
	case "BODY", "BINARY", "BINARY.SIZE":
	default:
		return sectionReq{}, false
	}
	end := sectionEnd(name, open)
	if end > len(name) || name[end-1] != ']' {
		return sectionReq{}, false
	}
	sr := sectionReq{kind: kind, length: -1}
	spec := name[open+1 : end-1]
	if !parseSectionSpec(spec, &sr.sec) {
		return sectionReq{}, false
	}
	rest := name[end:]
	if len(rest) > 0 {
		if rest[0] != '<' || rest[len(rest)-1] != '>' {
			return sectionReq{}, false
		}
		p := string(rest[1 : len(rest)-1])
		o, l, hasLen := strings.Cut(p, ".")
		origin, err := strconv.ParseInt(o, 10, 64)
		if err != nil || origin < 0 {
			return sectionReq{}, false
		}
		sr.origin = origin
		if request {
			if !hasLen {
				return sectionReq{}, false
			}
			n, err := strconv.ParseInt(l, 10, 64)
			if err != nil || n < 0 {
				return sectionReq{}, false
			}
			sr.length = n
		} else {
			sr.length = -2 // origin given; length from the request
		}
	}
	return sr, true
}

// parseSectionSpec parses a section spec (RFC 9051 section 9, section-spec).
func parseSectionSpec(spec []byte, sec *imap.FetchItemBodySection) bool {
	head, list, hasList := bytes.Cut(spec, []byte(" "))
	parts := strings.Split(string(head), ".")
	if len(head) == 0 {
		return !hasList
	}
	i := 0
	for ; i < len(parts); i++ {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			break
		}
		if n <= 0 {
			return false
		}
		sec.Part = append(sec.Part, n)
	}
	text := strings.ToUpper(strings.Join(parts[i:], "."))
	switch text {
	case "":
		return !hasList
	case "HEADER":
		sec.Specifier = imap.PartSpecifierHeader
	case "TEXT":
		sec.Specifier = imap.PartSpecifierText
	case "MIME":
		if len(sec.Part) == 0 {
			return false
		}
		sec.Specifier = imap.PartSpecifierMIME
	case "HEADER.FIELDS", "HEADER.FIELDS.NOT":
		sec.Specifier = imap.PartSpecifierHeader
		if !hasList {
			return false
		}
		fields, ok := headerList(list)
		if !ok {
			return false
		}
		if text == "HEADER.FIELDS" {
			sec.HeaderFields = fields
		} else {
			sec.HeaderFieldsNot = fields
		}
		return true
	default:
		return false
	}
	return !hasList
}

// headerList parses "(field field ...)" (astrings).
func headerList(b []byte) ([]string, bool) {
	s := &scanner{b: b}
	if t, err := s.next(); err != nil || t.kind != tokOpen {
		return nil, false
	}
	var out []string
	for {
		t, err := s.next()
		if err != nil {
			return nil, false
		}
		if t.kind == tokClose {
			return out, len(out) > 0
		}
		v, ok := astring(t)
		if !ok {
			return nil, false
		}
		out = append(out, string(v))
	}
}

// sameSection reports whether two parsed sections name the same data (header field names compare
// case-insensitively, RFC 9051 section 6.4.5).
func sameSection(a, b *imap.FetchItemBodySection) bool {
	eqFold := func(x, y []string) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !strings.EqualFold(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return intsEqual(a.Part, b.Part) && a.Specifier == b.Specifier &&
		eqFold(a.HeaderFields, b.HeaderFields) && eqFold(a.HeaderFieldsNot, b.HeaderFieldsNot)
}

func intsEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// fetchItem is one item of a FETCH response: bytes [start,end) of the unit, name and value.
type fetchItem struct {
	start, end int
	name       string // upper case
	rawName    []byte
	val        token // first token of the value
	valEnd     int
}

// parseFetchItems parses the items of a FETCH response "* N FETCH (...)" in u. On a unit that is cut short
// (a literal not read yet) it returns the items before the cut and an error.
func parseFetchItems(u []byte) (items []fetchItem, listStart int, err error) {
	return appendFetchItems(make([]fetchItem, 0, 8), u)
}

// appendFetchItems is parseFetchItems appending to items (a buffer reused by the caller).
func appendFetchItems(items []fetchItem, u []byte) (_ []fetchItem, listStart int, err error) {
	open := bytes.IndexByte(u, '(')
	if open < 0 {
		return nil, 0, errMalformedFetch
	}
	pos := open + 1
	for {
		for pos < len(u) && u[pos] == ' ' {
			pos++
		}
		if pos >= len(u) {
			return items, open + 1, errMalformedFetch
		}
		if u[pos] == ')' {
			return items, open + 1, nil
		}
		start := pos
		end := fetchAttEnd(u, pos)
		if end == start || end >= len(u) || u[end] != ' ' {
			return items, open + 1, errMalformedFetch
		}
		it := fetchItem{start: start, rawName: u[start:end], name: itemName(u[start:end])}
		vs := end + 1
		ve := skipValueAt(u, vs)
		if ve < 0 || ve == vs {
			return items, open + 1, errMalformedFetch
		}
		s := &scanner{b: u[:ve], pos: vs}
		if it.val, err = s.next(); err != nil {
			return items, open + 1, err
		}
		it.valEnd, it.end = ve, ve
		items = append(items, it)
		pos = ve
	}
}

// itemName returns the upper-case name of a FETCH item, without allocating for the common ones.
func itemName(b []byte) string {
	for _, n := range [...]string{"UID", "FLAGS", "RFC822.SIZE", "ENVELOPE", "INTERNALDATE", "MODSEQ", "BODYSTRUCTURE", "BODY", "BODY[]", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODY[HEADER]", "BODY[TEXT]"} {
		if bytes.EqualFold(b, []byte(n)) {
			return n
		}
	}
	return strings.ToUpper(string(b))
}

var errMalformedFetch = &protoError{"malformed FETCH response"}

type protoError struct{ s string }

func (e *protoError) Error() string { return "proxy: " + e.s }

// uidOf returns the UID item's value.
func uidOf(u []byte, items []fetchItem) (uint32, bool) {
	for _, it := range items {
		if it.name == "UID" && it.val.kind == tokAtom {
			n, err := strconv.ParseUint(string(it.val.val), 10, 32)
			return uint32(n), err == nil && n > 0
		}
	}
	return 0, false
}

// hasBodyItem reports whether a response carries an item computed from the message's content.
func hasBodyItem(items []fetchItem) bool {
	for _, it := range items {
		if bodyDependentItem(it.name) {
			return true
		}
	}
	return false
}

// fetchOwner returns the oldest pending FETCH command: responses to pipelined FETCH commands come in the
// order the commands were sent (a server writes one command's responses at a time). Without one, a FETCH
// response was pushed by NOTIFY (RFC 5465 section 5.2), whose MessageNew attributes then apply.
func (r *relay) fetchOwner() *command {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.pending {
		if c.fetch != nil {
			return c
		}
	}
	if r.notify != nil {
		return &command{fetch: r.notify}
	}
	return nil
}

// prepareNotify adds UID to the fetch attributes of NOTIFY's MessageNew event (RFC 5465 section 5.2) when
// they ask for body-dependent items, so that pushed FETCH responses name their message.
func (r *relay) prepareNotify(u unit) unit {
	i := indexFold(u, "MESSAGENEW")
	if i < 0 {
		return u
	}
	j := i + len("MESSAGENEW")
	for j < len(u) && u[j] == ' ' {
		j++
	}
	if j >= len(u) || u[j] != '(' {
		return u
	}
	// Reuse the FETCH parser on "x FETCH 1 (<atts>)".
	end := sectionEndParen(u, j)
	if end < 0 {
		return u
	}
	fake := newCommand("", "FETCH")
	probe := append([]byte("x FETCH 1 "), u[j:end]...)
	probe = append(probe, "\r\n"...)
	out := r.prepareFetch(fake, probe)
	r.mu.Lock()
	r.notify = fake.fetch
	r.mu.Unlock()
	if !fake.fetch.addedUID {
		return u
	}
	atts := bytes.TrimSuffix(out[len("x FETCH 1 "):], []byte("\r\n"))
	res := append([]byte(nil), u[:j]...)
	res = append(res, atts...)
	return append(res, u[end:]...)
}

// sectionEndParen returns the offset after the ')' closing the '(' at b[open], or -1.
func sectionEndParen(b []byte, open int) int {
	depth := 0
	for i := open; i < len(b); i++ {
		switch b[i] {
		case '[':
			i = sectionEnd(b, i) - 1
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		case '\r', '\n':
			return -1
		}
	}
	return -1
}

// leadingUID returns the UID of a FETCH response whose first item is UID, and the length of that item with
// its separating space (0 when the response does not start so).
func leadingUID(u []byte) (uint32, int) {
	open := bytes.IndexByte(u, '(')
	if open < 0 || len(u) < open+6 || !bytes.EqualFold(u[open+1:open+5], []byte("UID ")) {
		return 0, 0
	}
	i := open + 5
	var v uint64
	start := i
	for i < len(u) && u[i] >= '0' && u[i] <= '9' && i-start < 10 {
		v = v*10 + uint64(u[i]-'0')
		i++
	}
	if i == start || v == 0 || v > 1<<32-1 || i >= len(u) || (u[i] != ' ' && u[i] != ')') {
		return 0, 0
	}
	if u[i] == ' ' {
		i++
	}
	return uint32(v), i - (open + 1)
}

// emitWithout emits u without the n bytes after its "(" (the UID the relay added).
func (r *relay) emitWithout(u []byte, n int) error {
	open := bytes.IndexByte(u, '(') + 1
	if err := r.emit(u[:open]); err != nil {
		return err
	}
	return r.emit(u[open+n:])
}

// withoutItem returns u without the item it (and one separating space).
func withoutItem(u []byte, it fetchItem) []byte {
	start, end := it.start, it.end
	if end < len(u) && u[end] == ' ' {
		end++
	} else if start > 0 && u[start-1] == ' ' {
		start--
	}
	out := make([]byte, 0, len(u)-(end-start))
	out = append(out, u[:start]...)
	return append(out, u[end:]...)
}

// fetchResponse relays one FETCH response whose first line is line.
func (r *relay) fetchResponse(line []byte, seq uint32) error {
	if _, ok := literalAt(line); !ok {
		return r.fetchUnit(line, seq, false) // the whole response, in the reader's buffer
	}
	buf := append([]byte(nil), line...)
	for {
		m, ok := literalAt(line)
		if !ok {
			break
		}
		if m.size >= streamThreshold {
			if pass, prefix := r.streamable(buf); pass {
				var err error
				buf, line, err = r.stream(prefix, m.size)
				if err != nil {
					return err
				}
				return r.passRest(buf, line)
			}
		}
		var err error
		if buf, err = appendN(buf, r.up.R, m.size); err != nil {
			return err
		}
		if line, err = readLine(r.up.R); err != nil {
			return err
		}
		buf = append(buf, line...)
	}
	return r.fetchUnit(buf, seq, true)
}

// passRest passes the rest of a response through after a streamed literal.
func (r *relay) passRest(buf, line []byte) error {
	for {
		m, ok := literalAt(line)
		if !ok {
			return r.emit(buf)
		}
		var err error
		if m.size >= streamThreshold {
			if buf, line, err = r.stream(buf, m.size); err != nil {
				return err
			}
			continue
		}
		if buf, err = appendN(buf, r.up.R, m.size); err != nil {
			return err
		}
		if line, err = readLine(r.up.R); err != nil {
			return err
		}
		buf = append(buf, line...)
	}
}

// streamable decides, from the part of a FETCH response read before a large literal, whether the response
// passes through unchanged; if so it returns the part to send (without the UID the relay added).
func (r *relay) streamable(part []byte) (bool, []byte) {
	items, _, _ := parseFetchItems(part)
	uid, ok := uidOf(part, items)
	if !ok {
		return false, nil
	}
	cl, err := r.classOf(r.ctx, r.selected(), uid)
	if err != nil || cl != plainMsg {
		return false, nil
	}
	if owner := r.fetchOwner(); owner != nil && owner.fetch.addedUID {
		for _, it := range items {
			if it.name == "UID" {
				return true, withoutItem(part, it)
			}
		}
	}
	return true, part
}

// fetchUnit relays one complete FETCH response. Unless owned, u is the upstream reader's buffer: it is copied
// before the next read (emit, or the rewrite's own copy).
func (r *relay) fetchUnit(u []byte, seq uint32, owned bool) error {
	// Fast path for the common case, a plain message whose response starts with its UID (as Dovecot writes
	// it): no parsing of the rest.
	if uid, n := leadingUID(u); n > 0 {
		if cl, err := r.classOf(r.ctx, r.selected(), uid); err == nil && cl == plainMsg {
			if owner := r.fetchOwner(); owner != nil && owner.fetch.addedUID {
				return r.emitWithout(u, n)
			}
			return r.emit(u)
		}
	}
	items, _, err := appendFetchItems(r.itemsBuf[:0], u)
	r.itemsBuf = items[:0]
	if err != nil {
		return r.emit(u)
	}
	var owner *command
	if !hasBodyItem(items) {
		owner = r.fetchOwner()
		if owner == nil || !owner.fetch.synth {
			return r.emit(u)
		}
		uid, ok := uidOf(u, items)
		if !ok || !owner.fetch.uids[uid] || owner.fetch.answered[uid] {
			return r.emit(u) // not one of the command's own responses (a flag update)
		}
		owner.fetch.answered[uid] = true
	} else {
		owner = r.fetchOwner()
	}
	var uidItem *fetchItem
	for i := range items {
		if items[i].name == "UID" {
			uidItem = &items[i]
		}
	}
	plain := u
	if owner != nil && owner.fetch.addedUID && uidItem != nil {
		plain = withoutItem(u, *uidItem)
	}
	uid, ok := uidOf(u, items)
	if !ok {
		return r.emit(plain)
	}
	m := r.selected()
	cl, err := r.classOf(r.ctx, m, uid)
	if err != nil {
		if r.ctx.Err() != nil {
			return err
		}
		r.log.Warn("cannot classify message; relaying it unchanged", "uid", uid, "err", err)
		r.srv.opts.Metrics.UpstreamError()
		return r.emit(plain)
	}
	switch cl {
	case plainMsg:
		return r.emit(plain)
	case vanished:
		// Expunged before it could be classified; whether it needs rewriting is unknown, so it is left out,
		// as a server may do for a message another session expunged (RFC 9051 section 7.1, EXPUNGEISSUED).
		if owner == nil || owner.tag == "" {
			return r.emit(plain)
		}
		owner.expunged.Store(true)
		return nil
	}
	var req *fetchReq
	if owner != nil {
		req = owner.fetch
	}
	if meta, ok := r.storedMeta(m, uid, items, req); ok {
		// Every body-dependent item is metadata that is stored: no fetch, no decryption, no goroutine.
		out, _, _ := buildServed(&servedView{meta: &meta}, u, seq, items, req)
		for _, b := range out {
			if err := r.emit(b); err != nil {
				return err
			}
		}
		return nil
	}
	// The rewrite runs on after the reader moves on: it gets its own copies.
	if !owned {
		u = append([]byte(nil), u...)
	}
	items = append([]fetchItem(nil), items...)
	for i := range items {
		items[i].rawName = u[items[i].start : items[i].start+len(items[i].rawName)]
		if items[i].val.kind == tokLiteral {
			vs := items[i].valEnd - len(items[i].val.val)
			items[i].val.val = u[vs:items[i].valEnd]
		}
	}
	fut := make(chan [][]byte, 1)
	if err := r.flushBatch(); err != nil {
		return err
	}
	if err := r.sendFuture(fut); err != nil {
		return err
	}
	var ownerCmd *command
	if owner != nil && owner.tag != "" {
		ownerCmd = owner
		owner.rewrites.Add(1)
	}
	r.srv.rewriteSem <- struct{}{}
	go func() {
		defer func() { <-r.srv.rewriteSem }()
		if ownerCmd != nil {
			defer ownerCmd.rewrites.Done()
		}
		defer func() {
			if v := recover(); v != nil {
				r.log.Error("panic rewriting a FETCH response", "panic", v)
				fut <- nil
				r.stop("Internal error")
			}
		}()
		out, gone, failed := r.rewriteFetch(r.ctx, u, seq, items, m, uid, req)
		if gone && ownerCmd != nil {
			ownerCmd.expunged.Store(true)
		}
		if failed && ownerCmd != nil {
			ownerCmd.failed.Store(true)
		}
		fut <- out
	}()
	return nil
}

// rewriteFetch builds the FETCH response for a candidate message from its served copy. A message that
// vanished upstream before its ciphertext could be read is left out (gone), as a server may do for a message
// another session expunged (RFC 9051 section 7.1, EXPUNGEISSUED).
func (r *relay) rewriteFetch(ctx context.Context, u []byte, seq uint32, items []fetchItem, m mailboxRef, uid uint32, req *fetchReq) (out [][]byte, gone, failed bool) {
	// The ciphertext is in the response when the client asked for all of it.
	var inline []byte
	for _, it := range items {
		if (it.name == "BODY[]" || it.name == "RFC822") && it.val.kind == tokLiteral {
			inline = it.val.val[:len(it.val.val):len(it.val.val)]
		}
	}
	handed := false
	raw := func() ([]byte, error) {
		if inline != nil && !handed {
			handed = true
			return inline, nil
		}
		return r.fetchRaw(ctx, m, uid)
	}
	served, err := r.srv.opts.Rewriter.Rewrite(ctx, r.ref(m, uid), raw)
	if errors.Is(err, errNoSuchMessage) {
		r.log.Debug("message expunged upstream before it could be read", "uid", uid)
		return nil, true, false
	}
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("cannot read message to decrypt; relaying it unchanged", "uid", uid, "err", err)
		}
		if handed {
			return [][]byte{nilBodyItems(u, items, req)}, false, false
		}
		return [][]byte{stripAdded(u, items, req)}, false, false
	}
	return buildServed(newServedView(r, m, uid, served), u, seq, items, req)
}

// buildServed builds the FETCH response of a candidate message from v: the items that do not depend on the
// content as the server sent them, the others computed by v (failed: a BINARY item could not be).
func buildServed(v *servedView, u []byte, seq uint32, items []fetchItem, req *fetchReq) (out [][]byte, gone, failed bool) {
	p := &parts{cur: make([]byte, 0, 512)}
	p.cur = append(p.cur, "* "...)
	p.cur = strconv.AppendUint(p.cur, uint64(seq), 10)
	p.cur = append(p.cur, " FETCH ("...)
	first := true
	for _, it := range items {
		if it.name == "UID" && req != nil && req.addedUID {
			continue
		}
		if !first {
			p.cur = append(p.cur, ' ')
		}
		first = false
		if !bodyDependentItem(it.name) {
			p.cur = append(p.cur, u[it.start:it.end]...)
			continue
		}
		p.cur = append(p.cur, it.rawName...)
		p.cur = append(p.cur, ' ')
		v.appendItem(p, it, req)
	}
	if req != nil && req.synth {
		for _, n := range req.bodyNames {
			if !first {
				p.cur = append(p.cur, ' ')
			}
			first = false
			it := fetchItem{name: strings.ToUpper(n), rawName: []byte(n)}
			p.cur = append(p.cur, n...)
			p.cur = append(p.cur, ' ')
			v.appendItem(p, it, req)
		}
	}
	p.cur = append(p.cur, ")\r\n"...)
	if v.failed {
		// As the server does when it cannot decode a part: the items read so far without the body items,
		// and NO for the command.
		return [][]byte{withoutBodyItems(u, seq, items, req)}, false, true
	}
	return p.all(), false, false
}

// metaReadAhead is how many messages' stored metadata storedMeta reads at once.
const metaReadAhead = 512

// storedMeta returns the stored metadata of a candidate when it answers every body-dependent item of its
// response (and, for a FETCH sent without them, of the command: fetchReq.bodyNames). Within a command it
// reads ahead: a FETCH over a range asks for the following UIDs next, and one read of the store for many
// messages costs little more than one for each.
func (r *relay) storedMeta(m mailboxRef, uid uint32, items []fetchItem, req *fetchReq) (ServedMeta, bool) {
	ms, ok := r.srv.opts.MetaSource, r.srv.opts.MetaSource != nil
	if !ok {
		return ServedMeta{}, false
	}
	for _, it := range items {
		if bodyDependentItem(it.name) && !metaItemOf(req, it) {
			return ServedMeta{}, false
		}
	}
	if req != nil && req.synth {
		for _, n := range req.bodyNames {
			if !metaItem(n) {
				return ServedMeta{}, false
			}
		}
	}
	if req == nil {
		return ms.Meta(r.ref(m, uid))
	}
	if req.meta == nil || req.metaBox != m || uid < req.metaFrom || uid > req.metaTo {
		if req.meta == nil {
			req.meta = make(map[uint32]ServedMeta, metaReadAhead)
		} else {
			clear(req.meta)
		}
		req.metaBox, req.metaFrom = m, uid
		req.metaTo = ms.MetaRange(r.ref(m, uid), metaReadAhead, func(u uint32, meta ServedMeta) { req.meta[u] = meta })
		if req.metaTo < uid {
			return ServedMeta{}, false // nothing could be read
		}
	}
	meta, ok := req.meta[uid]
	return meta, ok
}

// metaItemOf is metaItem for an item of a response to req (whose section items are parsed once).
func metaItemOf(req *fetchReq, it fetchItem) bool {
	switch it.name {
	case "RFC822.SIZE", "RFC822.HEADER", "ENVELOPE", "BODY", "BODYSTRUCTURE":
		return true
	}
	sr, ok := responseSection(req, it.rawName)
	return ok && sr.kind == "BODY" && len(sr.sec.Part) == 0 && sr.sec.Specifier == imap.PartSpecifierHeader
}

// withoutBodyItems returns the response with only its items that do not depend on the content.
func withoutBodyItems(u []byte, seq uint32, items []fetchItem, req *fetchReq) []byte {
	out := append([]byte("* "), strconv.FormatUint(uint64(seq), 10)...)
	out = append(out, " FETCH ("...)
	first := true
	for _, it := range items {
		if bodyDependentItem(it.name) || it.name == "UID" && req != nil && req.addedUID {
			continue
		}
		if !first {
			out = append(out, ' ')
		}
		first = false
		out = append(out, u[it.start:it.end]...)
	}
	return append(out, ")\r\n"...)
}

// stripAdded returns u without the UID the relay added.
func stripAdded(u []byte, items []fetchItem, req *fetchReq) []byte {
	if req != nil && req.addedUID {
		for _, it := range items {
			if it.name == "UID" {
				return withoutItem(u, it)
			}
		}
	}
	return u
}

// nilBodyItems returns u with every body-dependent item's value NIL (the message could not be read again:
// expunged meanwhile, as a server answers, RFC 9051 section 7.5.2).
func nilBodyItems(u []byte, items []fetchItem, req *fetchReq) []byte {
	out := append([]byte(nil), u[:items[0].start]...)
	first := true
	for _, it := range items {
		if it.name == "UID" && req != nil && req.addedUID {
			continue
		}
		if !first {
			out = append(out, ' ')
		}
		first = false
		if bodyDependentItem(it.name) && it.name != "RFC822.SIZE" {
			out = append(out, it.rawName...)
			out = append(out, " NIL"...)
		} else {
			out = append(out, u[it.start:it.end]...)
		}
	}
	return append(out, ")\r\n"...)
}
