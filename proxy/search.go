package proxy

import (
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/text/encoding/htmlindex"
)

// SEARCH, UID SEARCH, SORT, THREAD (RFC 9051 section 6.4.4, RFC 5256, RFC 4731, RFC 5267) with BODY or TEXT
// keys must see the served (decrypted) copies of encrypted messages. The relay evaluates each such key itself
// over the mailbox's candidates E (the index) and rewrites it so that the upstream server answers for every
// other message as before:
//
//	BODY x   becomes   (OR UID <M> (BODY x NOT UID <E>))
//
// where M is the subset of E whose served copy matches. LARGER n and SMALLER n are rewritten the same way,
// M being the subset of E whose served copy (RFC822.SIZE as served, the length of BODY[]) is larger or
// smaller than n: the upstream server would compare the stored ciphertext's size. So are the header keys
// FROM, TO, CC, BCC, SUBJECT and HEADER <field> x (a field the Rewriter does not own, below), M being the
// subset of E whose served top-level header matches (HeaderMatcher.MatchSearchHeader, which follows the
// upstream server's own rules: Dovecot's address normalization, white space folding for SUBJECT, encoded words
// decoded): the upstream server would read the stored outer header, which for RFC 9788 header-protected mail
// is not what the client is served (an obscured Subject, no To). The rule is fidelity: the answer is the one
// the upstream server would give if it stored the served copies. M is computed from the metadata store
// (MetaSource: size and header; StoredTextMatcher: text) for the candidates it holds, so a search after a
// restart decrypts nothing, and from the served copy (cache or decryption) for the others. Everything else
// (the other keys, sequence numbers, RETURN options, SAVE and $, threading, CONTEXT updates) stays the
// upstream's.
// Encrypted messages that arrive after the rewrite of a SEARCH RETURN (UPDATE) are judged by the relay, which
// keeps the context (context.go); other new messages are the upstream's. A SORT with a
// SIZE, DATE, SUBJECT, FROM, TO, CC, DISPLAYFROM or DISPLAYTO key over a mailbox with candidates is ordered by
// the relay with served sizes and served header fields (sort.go).
//
// HEADER keys on the Rewriter's own fields (HeaderMatcher.OwnsField: X-Smimeproxy-*) are never answered by the
// upstream server alone, which would find forged fields and never the status fields the proxy adds. For a
// field the proxy writes (HeaderGuard.StatusFields), no plain message has one as served (one stored upstream
// was forged and is removed, the message being a candidate), so
//
//	HEADER X-Smimeproxy-Status x   becomes   (UID <M>)   or, when M is empty,   (NOT ALL)
//
// where M is the subset of E whose served header has the field with x in its value (HeaderMatcher.MatchHeader,
// RFC 9051 section 6.4.4 HEADER semantics). Any other X-Smimeproxy-* field is relayed as stored in plain
// messages that are not candidates, so that key is rewritten like BODY: (OR UID <M> (HEADER f x NOT UID <E>)).

// searchArity gives the number of arguments of each search key (RFC 9051 section 6.4.4 and extensions).
var searchArity = map[string]int{
	"ALL": 0, "ANSWERED": 0, "DELETED": 0, "DRAFT": 0, "FLAGGED": 0, "NEW": 0, "OLD": 0, "RECENT": 0,
	"SEEN": 0, "UNANSWERED": 0, "UNDELETED": 0, "UNDRAFT": 0, "UNFLAGGED": 0, "UNSEEN": 0,
	"SAVEDATESUPPORTED": 0,
	"BCC":               1, "BEFORE": 1, "BODY": 1, "CC": 1, "FROM": 1, "KEYWORD": 1, "LARGER": 1, "ON": 1,
	"SENTBEFORE": 1, "SENTON": 1, "SENTSINCE": 1, "SINCE": 1, "SMALLER": 1, "SUBJECT": 1, "TEXT": 1,
	"TO": 1, "UID": 1, "UNKEYWORD": 1, "OLDER": 1, "YOUNGER": 1, "SAVEDBEFORE": 1, "SAVEDON": 1,
	"SAVEDSINCE": 1, "EMAILID": 1, "THREADID": 1, "FILTER": 1,
	"HEADER": 2,
}

// textKey is one BODY or TEXT key of a search program, a HEADER key on a field the Rewriter owns, a LARGER or
// SMALLER key, or another header key (hdrKey): its bytes [start,end), its string, for HEADER the field name,
// for LARGER and SMALLER the comparison.
type textKey struct {
	start, end int
	needle     string
	headerToo  bool
	field      string // HEADER key: the field name; "" for BODY and TEXT
	sizeOp     string // "LARGER" or "SMALLER" (then size is the number); "" for the others
	size       uint64
	// hdrKey is a header key evaluated as the upstream server would over the served header: "FROM", "TO",
	// "CC", "BCC", "SUBJECT", or "HEADER" on a field the Rewriter does not own (field names it); "" for the
	// others.
	hdrKey string
}

// errSearchSyntax stops the rewrite: the command goes upstream unchanged (and the server says what is wrong).
var errSearchSyntax = &protoError{"search program not understood"}

// searchKeys finds the text keys (BODY, TEXT) of the search program that starts at s.
func searchKeys(s *scanner, depth int) ([]textKey, error) { return searchKeysOwned(s, depth, nil) }

// keyFilter says which keys besides BODY, TEXT, LARGER and SMALLER searchKeysOwned collects: HEADER keys on the
// fields owns reports true for, and with headers the other header keys (BCC, CC, FROM, SUBJECT, TO, HEADER).
type keyFilter struct {
	owns    func(string) bool
	headers bool
}

// searchKeysOwned finds the text keys of the search program that starts at s and those f asks for.
func searchKeysOwned(s *scanner, depth int, f *keyFilter) ([]textKey, error) {
	var out []textKey
	for {
		save := s.pos
		t, err := s.next()
		if err != nil {
			return nil, err
		}
		switch t.kind {
		case tokEOL, tokEOF:
			s.pos = save
			return out, nil
		case tokClose:
			if depth == 0 {
				return nil, errSearchSyntax
			}
			s.pos = save
			return out, nil
		}
		keys, err := searchKey(s, t, depth, f)
		if err != nil {
			return nil, err
		}
		out = append(out, keys...)
	}
}

// searchKey reads one key whose first token is t.
func searchKey(s *scanner, t token, depth int, f *keyFilter) ([]textKey, error) {
	if depth > 100 {
		return nil, errSearchSyntax
	}
	switch t.kind {
	case tokOpen:
		keys, err := searchKeysOwned(s, depth+1, f)
		if err != nil {
			return nil, err
		}
		if c, err := s.next(); err != nil || c.kind != tokClose {
			return nil, errSearchSyntax
		}
		return keys, nil
	case tokAtom:
	default:
		return nil, errSearchSyntax
	}
	name := strings.ToUpper(string(t.val))
	switch name {
	case "NOT", "FUZZY":
		n, err := s.next()
		if err != nil {
			return nil, err
		}
		keys, err := searchKey(s, n, depth+1, f)
		if name == "FUZZY" && len(keys) > 0 {
			return nil, errSearchSyntax // a fuzzy text key cannot be rewritten into a group
		}
		return keys, err
	case "OR":
		var all []textKey
		for range 2 {
			n, err := s.next()
			if err != nil {
				return nil, err
			}
			keys, err := searchKey(s, n, depth+1, f)
			if err != nil {
				return nil, err
			}
			all = append(all, keys...)
		}
		return all, nil
	case "MODSEQ":
		// MODSEQ [entry-name entry-type-req] mod-sequence-valzer (RFC 7162 section 3.1.5)
		n, err := s.next()
		if err != nil {
			return nil, err
		}
		if n.kind == tokQuoted || n.kind == tokLiteral {
			s.next()
			s.next()
		}
		return nil, nil
	}
	if isSequenceSet(t.val) {
		return nil, nil
	}
	arity, ok := searchArity[name]
	if !ok {
		return nil, errSearchSyntax
	}
	var first, last token
	for i := range arity {
		a, err := s.next()
		if err != nil {
			return nil, err
		}
		if _, ok := astring(a); !ok {
			return nil, errSearchSyntax
		}
		if i == 0 {
			first = a
		}
		last = a
	}
	switch {
	case name == "LARGER" || name == "SMALLER":
		n, err := strconv.ParseUint(string(first.val), 10, 32)
		if err != nil {
			return nil, nil // the upstream server says what is wrong
		}
		return []textKey{{start: t.start, end: last.end, sizeOp: name, size: n}}, nil
	case name == "BODY" || name == "TEXT":
		return []textKey{{start: t.start, end: last.end, needle: string(last.val), headerToo: name == "TEXT"}}, nil
	case name == "HEADER" && f != nil && f.owns != nil && f.owns(string(first.val)):
		return []textKey{{start: t.start, end: last.end, needle: string(last.val), field: string(first.val)}}, nil
	case f != nil && f.headers && (name == "HEADER" || headerKeys[name]):
		k := textKey{start: t.start, end: last.end, needle: string(last.val), hdrKey: name}
		if name == "HEADER" {
			k.field = string(first.val)
		}
		return []textKey{k}, nil
	}
	return nil, nil
}

// headerKeys are the search keys on one header field besides HEADER (RFC 9051 section 6.4.4).
var headerKeys = map[string]bool{"BCC": true, "CC": true, "FROM": true, "SUBJECT": true, "TO": true}

func isSequenceSet(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c == '*' || c == ':' || c == ',' || c == '$') {
			return false
		}
	}
	return len(b) > 0
}

// searchProgram positions s at the search program of a SEARCH, SORT or THREAD command.
func searchProgram(u unit, name string) (*scanner, bool) {
	s, _, ok := searchProgramCharset(u, name)
	return s, ok
}

// searchProgramCharset is searchProgram that also returns the command's CHARSET ("" when it names none).
func searchProgramCharset(u unit, name string) (s *scanner, charset string, ok bool) {
	s = &scanner{b: u}
	cs := func() {
		if t, err := s.next(); err == nil {
			if v, ok := astring(t); ok {
				charset = string(v)
			}
		}
	}
	s.next() // tag
	if strings.HasPrefix(name, "UID ") {
		s.next()
	}
	s.next() // command
	switch strings.TrimPrefix(name, "UID ") {
	case "SORT":
		t, _ := s.next()
		if t.kind == tokAtom && strings.EqualFold(string(t.val), "RETURN") { // ESORT, RFC 5267 section 3
			o, _ := s.next()
			if _, err := s.skipValue(o); err != nil {
				return nil, "", false
			}
			t, _ = s.next()
		}
		if t.kind != tokOpen {
			return nil, "", false
		}
		if _, err := s.skipValue(t); err != nil {
			return nil, "", false
		}
		cs()
	case "THREAD":
		s.next() // algorithm
		cs()
	default:
		for {
			save := s.pos
			t, err := s.next()
			if err != nil || t.kind != tokAtom {
				s.pos = save
				break
			}
			switch strings.ToUpper(string(t.val)) {
			case "RETURN":
				o, _ := s.next()
				if _, err := s.skipValue(o); err != nil {
					return nil, "", false
				}
				continue
			case "CHARSET":
				cs()
				continue
			}
			s.pos = save
			break
		}
	}
	return s, charset, true
}

// utf8Needle converts a search string from the command's charset to UTF-8, as the upstream server does before
// it compares (RFC 9051 section 6.4.4: strings are in CHARSET, default US-ASCII or UTF-8); a charset it cannot
// convert leaves the needle as sent (the server then answers NO [BADCHARSET] itself).
func utf8Needle(needle, charset string) string {
	switch cs := strings.ToLower(charset); cs {
	case "", "utf-8", "utf8", "us-ascii":
		return needle
	default:
		enc, err := htmlindex.Get(cs)
		if err != nil {
			return needle
		}
		out, err := enc.NewDecoder().String(needle)
		if err != nil {
			return needle
		}
		return out
	}
}

// prepareSearch rewrites the text keys, the size keys and the HEADER keys on the Rewriter's own fields of a
// search command (see above), and a SORT by served values (sort.go); it returns u unchanged when there is
// nothing to rewrite, and nil when it answered the command itself (NO [CANNOT] for a RETURN (UPDATE) it cannot
// keep).
func (r *relay) prepareSearch(c *command, u unit) (unit, error) {
	tm, textOK := r.srv.opts.TextMatcher, r.srv.opts.TextMatcher != nil
	hm, headerOK := r.srv.opts.HeaderMatcher, r.srv.opts.HeaderMatcher != nil
	s, charset, ok := searchProgramCharset(u, c.name)
	if !ok {
		return u, nil
	}
	progStart := s.pos
	sortBy := sortServed(u, c.name)
	var filter keyFilter
	if headerOK {
		filter = keyFilter{owns: hm.OwnsField, headers: true}
	}
	all, err := searchKeysOwned(s, 0, &filter)
	if err != nil {
		return u, nil
	}
	var written map[string]bool // fields no plain message has as served
	if hg := r.srv.opts.HeaderGuard; hg != nil {
		written = map[string]bool{}
		for _, f := range hg.StatusFields() {
			written[strings.ToLower(f)] = true
		}
	}
	var keys []textKey
	onlyCandidates := false // some key matches only candidates
	for _, k := range all {
		if k.field == "" && k.sizeOp == "" && k.hdrKey == "" && !textOK {
			continue
		}
		k.needle = utf8Needle(k.needle, charset)
		keys = append(keys, k)
		onlyCandidates = onlyCandidates || k.owned() && written[strings.ToLower(k.field)]
	}
	if len(keys) == 0 && sortBy == nil {
		return u, nil
	}
	// RETURN (UPDATE): the relay keeps the context to judge later encrypted messages (context.go).
	update, supported := updateSearch(u, c.name)
	var prog *progNode
	if update && len(keys) > 0 {
		var why string
		if prog, why = r.contextProgram(u, progStart, keys, supported); why != "" {
			return nil, r.local(c.tag, "NO [CANNOT] "+why)
		}
	}
	// The selected mailbox is known once every earlier command completed.
	if err := r.waitIdle(); err != nil {
		return nil, err
	}
	m := r.selected()
	if !m.ok {
		return u, nil
	}
	ctx := r.ctx
	enc, err := r.candidates(ctx, m)
	if err != nil {
		r.log.Warn("cannot list encrypted messages; searching upstream only", "err", err)
		return u, nil
	}
	if prog != nil && !r.openContext(c, m, keys, prog) {
		return nil, r.local(c.tag, "NO [CANNOT] The mailbox is changing; try RETURN (UPDATE) again")
	}
	if len(enc) == 0 && !onlyCandidates {
		return u, nil
	}
	matches := make([][]uint32, len(keys))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, uid := range enc {
		if len(keys) == 0 {
			break // a SORT by served values only: the sort reads the served copies itself
		}
		r.srv.rewriteSem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-r.srv.rewriteSem }()
			if hits, ok := r.storedHits(m, uid, keys, hm); ok {
				mu.Lock()
				for i, hit := range hits {
					if hit {
						matches[i] = append(matches[i], uid)
					}
				}
				mu.Unlock()
				return
			}
			served, err := r.srv.opts.Rewriter.Rewrite(ctx, r.ref(m, uid), func() ([]byte, error) { return r.fetchRaw(ctx, m, uid) })
			if err != nil {
				return // expunged meanwhile, or unreadable: the upstream's answer stands
			}
			for i, k := range keys {
				if keyHit(served, k, tm, hm) {
					mu.Lock()
					matches[i] = append(matches[i], uid)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	encSet := uidSetString(enc)
	out := make(unit, 0, len(u)+len(keys)*(2*len(encSet)+32))
	prev := 0
	for i, k := range keys {
		out = append(out, u[prev:k.start]...)
		prev = k.end
		if k.owned() && written[strings.ToLower(k.field)] {
			if len(matches[i]) == 0 {
				out = append(out, "(NOT ALL)"...)
			} else {
				out = append(out, "(UID "...)
				out = append(out, uidSetString(sortedUnique(matches[i]))...)
				out = append(out, ')')
			}
			continue
		}
		if len(enc) == 0 {
			out = append(out, u[k.start:k.end]...) // no candidates: the upstream answers for every message
			continue
		}
		out = append(out, '(')
		if len(matches[i]) > 0 {
			out = append(out, "OR UID "...)
			out = append(out, uidSetString(sortedUnique(matches[i]))...)
			out = append(out, " ("...)
		}
		out = append(out, u[k.start:k.end]...)
		out = append(out, " NOT UID "...)
		out = append(out, encSet...)
		if len(matches[i]) > 0 {
			out = append(out, ')')
		}
		out = append(out, ')')
	}
	out = append(out, u[prev:]...)
	if sortBy != nil && len(enc) > 0 {
		return r.prepareSort(c, out, progStart, sortBy, m, enc), nil
	}
	return out, nil
}

// storedHits evaluates the rewritten keys over what the metadata store kept of uid's served copy (sizes and
// header from MetaSource, text from StoredTextMatcher), so the copy need not be read and decrypted again; ok is
// false unless the store answers every key.
func (r *relay) storedHits(m mailboxRef, uid uint32, keys []textKey, hm HeaderMatcher) (hits []bool, ok bool) {
	ms, stm := r.srv.opts.MetaSource, r.srv.opts.StoredText
	ref := r.ref(m, uid)
	var meta *ServedMeta
	metaOf := func() *ServedMeta {
		if meta == nil && ms != nil {
			if v, ok := ms.Meta(ref); ok {
				meta = &v
			}
		}
		return meta
	}
	hits = make([]bool, len(keys))
	for i, k := range keys {
		switch {
		case k.sizeOp != "":
			mt := metaOf()
			if mt == nil {
				return nil, false
			}
			hits[i] = k.sizeOp == "LARGER" && uint64(mt.Size) > k.size || k.sizeOp == "SMALLER" && uint64(mt.Size) < k.size
		case k.hdrKey != "":
			mt := metaOf()
			if mt == nil || hm == nil {
				return nil, false
			}
			hits[i] = hm.MatchSearchHeader(mt.Header, k.hdrKey, k.field, k.needle)
		case k.field != "":
			mt := metaOf()
			if mt == nil || hm == nil {
				return nil, false
			}
			hits[i] = hm.MatchHeader(mt.Header, k.field, k.needle)
		default:
			if stm == nil {
				return nil, false
			}
			match, ok := stm.MatchStoredText(ref, k.needle, k.headerToo)
			if !ok {
				return nil, false
			}
			hits[i] = match
		}
	}
	return hits, true
}

// keyHit evaluates one rewritten key over a served copy.
func keyHit(served []byte, k textKey, tm TextMatcher, hm HeaderMatcher) bool {
	switch {
	case k.sizeOp == "LARGER":
		return uint64(len(served)) > k.size
	case k.sizeOp == "SMALLER":
		return uint64(len(served)) < k.size
	case k.hdrKey != "":
		return hm != nil && hm.MatchSearchHeader(served, k.hdrKey, k.field, k.needle)
	case k.field != "":
		return hm != nil && hm.MatchHeader(served, k.field, k.needle)
	default:
		return tm != nil && tm.MatchText(served, k.needle, k.headerToo)
	}
}

// owned reports a HEADER key on a field the Rewriter owns (HeaderMatcher.OwnsField).
func (k textKey) owned() bool { return k.field != "" && k.hdrKey == "" }

func sortedUnique(l []uint32) []uint32 {
	out := append([]uint32(nil), l...)
	slices.Sort(out)
	return slices.Compact(out)
}

// uidSetString formats ascending UIDs as an IMAP sequence set with ranges.
func uidSetString(uids []uint32) string {
	var b strings.Builder
	for i := 0; i < len(uids); {
		j := i
		for j+1 < len(uids) && uids[j+1] == uids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(uids[i]), 10))
		if j > i {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(uint64(uids[j]), 10))
		}
		i = j + 1
	}
	return b.String()
}
