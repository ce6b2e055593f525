package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/backend"
)

// SORT (RFC 5256) must order encrypted messages by what the client is served, not by what the upstream server
// stores: by SIZE the served size (RFC822.SIZE as served), not the ciphertext's; by SUBJECT, FROM, TO, CC,
// DISPLAYFROM, DISPLAYTO (RFC 5957) and DATE the served header fields, which for RFC 9788 header-protected
// mail (hp="cipher") are the protected ones, while the stored outer header has an obscured Subject "[...]",
// perhaps another From, no To or Date. The rule is fidelity: the answer is the one Dovecot would give for a
// mailbox holding the served copies. When the selected mailbox has candidates, the relay answers a SORT or UID
// SORT whose criteria include one of these keys itself:
//
//  1. The client's command goes upstream, on the client's connection, as
//     tag UID SEARCH CHARSET <charset> <program>
//     with the program rewritten as for SEARCH (search.go), so that sequence numbers, $ and the session's
//     state mean what they mean to the client. Its "* SEARCH" answer (the set X) is replaced by the sorted
//     "* SORT" response (or, for ESORT, RFC 5267 section 3, the "* ESEARCH" response with MIN, MAX, COUNT
//     and ALL as Dovecot's imap-search.c writes them); "Search completed" in the tagged response says "Sort
//     completed".
//  2. Over a side connection: RFC822.SIZE, INTERNALDATE and the header fields the keys read (UID FETCH
//     BODY.PEEK[HEADER.FIELDS (...)]) of X; for the candidates in X the served size and header, from the
//     metadata store when it holds the message (MetaSource: stored size and header, so a sort after a restart
//     decrypts nothing), else from the served copy; and for every other key K (ARRIVAL) a rank with ties
//     from UID SORT (K) and UID SORT (REVERSE K) over X. Both lists break ties by ascending UID (RFC 5256: by
//     sequence number, which ascends with the UID), so two messages tie under K exactly when they are
//     adjacent in ascending UID order in both lists.
//  3. Each header key gives every message of X Dovecot 2.3's sort string (HeaderMatcher.SortKey,
//     decrypt.SortKey: index-sort.c's rules, the RFC 5256 base subject of imap-base-subject.c, the first
//     address's mailbox or display name, its title-case decomposing normalizer; DATE the Date field as
//     message-date.c parses it, else the internal date), compared octet by octet as Dovecot compares them.
//     X is sorted lexicographically by the criteria (REVERSE reversing one key), ties by UID. A SORT (not
//     UID SORT) answers with sequence numbers, mapped from UIDs with the side connection's UID SEARCH ALL:
//     they are the client's as long as the client has been told of every expunge (while it has not, which
//     RFC 9051 section 7.5.1 allows until its next command, the numbers after an unannounced expunge would be
//     off by one, so the relay answers NO [UNAVAILABLE] when it notices).
//
// A SORT by ARRIVAL alone, over a mailbox without candidates, or in an ESORT form with other RETURN options
// (PARTIAL, SAVE, UPDATE) is relayed as before (its search program rewritten). THREAD (RFC 5256) is relayed:
// ORDEREDSUBJECT and REFERENCES group and order by the stored (outer) Subject, Date and references, so
// header-protected messages thread under "[...]".

// sortCrit is one sort criterion (RFC 5256 section 3).
type sortCrit struct {
	key     string // upper case: ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO, DISPLAYFROM, DISPLAYTO
	reverse bool
}

var sortKeys = map[string]bool{
	"ARRIVAL": true, "CC": true, "DATE": true, "FROM": true, "SIZE": true, "SUBJECT": true, "TO": true,
	"DISPLAYFROM": true, "DISPLAYTO": true, // RFC 5957
}

// servedSortKeys are the keys whose value differs between a message as stored and as served: SIZE, and the
// header keys (the served header of RFC 9788 header-protected mail is the protected one).
var servedSortKeys = map[string]bool{
	"SIZE": true, "DATE": true, "SUBJECT": true, "FROM": true, "TO": true, "CC": true,
	"DISPLAYFROM": true, "DISPLAYTO": true,
}

// headerSortKey reports whether k is ordered by a header field's value (decrypt.SortKey).
func headerSortKey(k string) bool { return k != "SIZE" && servedSortKeys[k] }

// sortReq is a SORT the relay orders itself: its criteria and, in the ESORT form (RFC 5267 section 3), the
// RETURN options.
type sortReq struct {
	crit                        []sortCrit
	esort, min, max, count, all bool
}

// sortServed returns the criteria of a SORT or UID SORT command u when they include a key of servedSortKeys;
// nil otherwise (no such key, another command, a key the relay does not know, an ESORT form with RETURN
// options other than MIN, MAX, COUNT and ALL, or with only MIN or MAX where a MODSEQ key would make the
// server report the MODSEQ of those messages alone).
func sortServed(u unit, name string) *sortReq {
	if name != "SORT" && name != "UID SORT" {
		return nil
	}
	s := &scanner{b: u}
	s.next() // tag
	if name == "UID SORT" {
		s.next()
	}
	s.next() // SORT
	req := &sortReq{}
	t, err := s.next()
	if err == nil && t.kind == tokAtom && strings.EqualFold(string(t.val), "RETURN") {
		if o, err := s.next(); err != nil || o.kind != tokOpen {
			return nil
		}
		req.esort = true
		for {
			o, err := s.next()
			if err != nil {
				return nil
			}
			if o.kind == tokClose {
				break
			}
			if o.kind != tokAtom {
				return nil
			}
			switch strings.ToUpper(string(o.val)) {
			case "MIN":
				req.min = true
			case "MAX":
				req.max = true
			case "COUNT":
				req.count = true
			case "ALL":
				req.all = true
			default:
				return nil
			}
		}
		if !req.min && !req.max && !req.count {
			req.all = true // RETURN () means ALL (RFC 4731 section 3.1)
		}
		if !req.all && !req.count && bytes.Contains(bytes.ToUpper(u), []byte("MODSEQ")) {
			return nil
		}
		t, err = s.next()
	}
	if err != nil || t.kind != tokOpen {
		return nil
	}
	reverse, served := false, false
	for {
		t, err := s.next()
		if err != nil {
			return nil
		}
		if t.kind == tokClose {
			break
		}
		if t.kind != tokAtom {
			return nil
		}
		k := strings.ToUpper(string(t.val))
		if k == "REVERSE" && !reverse {
			reverse = true
			continue
		}
		if !sortKeys[k] {
			return nil
		}
		req.crit = append(req.crit, sortCrit{key: k, reverse: reverse})
		reverse = false
		served = served || servedSortKeys[k]
	}
	if !served || reverse {
		return nil
	}
	return req
}

// prepareSort turns a SORT by served values (u, its search program already rewritten, starting at
// progStart) into the UID SEARCH described above and arranges for its answer to be sorted. m is the selected
// mailbox, enc its candidates.
func (r *relay) prepareSort(c *command, u unit, progStart int, req *sortReq, m mailboxRef, enc []uint32) unit {
	s := &scanner{b: u[:progStart]}
	tag, _ := s.next()
	var charset token
	for {
		t, err := s.next()
		if err != nil || t.kind == tokEOF || t.kind == tokEOL {
			break
		}
		charset = t
	}
	if tag.kind != tokAtom || charset.kind == tokEOF || charset.kind == tokClose || charset.kind == tokOpen {
		return u
	}
	out := make(unit, 0, len(u)+32)
	out = append(out, tag.val...)
	out = append(out, " UID SEARCH CHARSET "...)
	out = append(out, u[charset.start:charset.end]...)
	out = append(out, ' ')
	out = append(out, bytes.TrimLeft(u[progStart:], " ")...)

	var failed bool
	byUID := c.name == "UID SORT"
	c.untagged = func(line []byte) []byte {
		uids, suffix, ok := parseSearchResponse(line)
		if !ok {
			return line
		}
		order, err := r.sortOrder(r.ctx, m, enc, uids, req.crit, byUID)
		if err != nil {
			r.log.Warn("cannot sort by served values", "err", err)
			failed = true
			return nil
		}
		if req.esort {
			return esortResponse(c.tag, byUID, req, order, suffix)
		}
		resp := []byte("* SORT")
		for _, n := range order {
			resp = append(resp, ' ')
			resp = strconv.AppendUint(resp, uint64(n), 10)
		}
		resp = append(resp, suffix...)
		return append(resp, "\r\n"...)
	}
	c.tagged = func(line []byte) []byte {
		if failed {
			return []byte(c.tag + " NO [UNAVAILABLE] Cannot sort now, try again\r\n")
		}
		if i := bytes.Index(line, []byte("Search completed")); i >= 0 {
			return slices.Concat(line[:i], []byte("Sort"), line[i+len("Search"):])
		}
		return line
	}
	return out
}

// esortResponse is the ESEARCH response (RFC 5267 section 3) to an ESORT as Dovecot writes it
// (imap-search.c): MIN and MAX the first and last message in sort order and ALL the sorted numbers, runs of
// consecutive ascending numbers as n:m (none of them when nothing matched), COUNT always, then the MODSEQ of
// the SEARCH response.
func esortResponse(tag string, byUID bool, req *sortReq, order []uint32, suffix []byte) []byte {
	resp := []byte(`* ESEARCH (TAG "` + tag + `")`) // a tag has no quote or backslash (RFC 9051 section 9)
	if byUID {
		resp = append(resp, " UID"...)
	}
	if len(order) > 0 {
		if req.min {
			resp = append(resp, " MIN "...)
			resp = strconv.AppendUint(resp, uint64(order[0]), 10)
		}
		if req.max {
			resp = append(resp, " MAX "...)
			resp = strconv.AppendUint(resp, uint64(order[len(order)-1]), 10)
		}
		if req.all {
			resp = append(resp, " ALL "...)
			for i := 0; i < len(order); {
				j := i
				for j+1 < len(order) && order[j+1] == order[j]+1 {
					j++
				}
				if i > 0 {
					resp = append(resp, ',')
				}
				resp = strconv.AppendUint(resp, uint64(order[i]), 10)
				if j > i {
					resp = append(resp, ':')
					resp = strconv.AppendUint(resp, uint64(order[j]), 10)
				}
				i = j + 1
			}
		}
	}
	if req.count {
		resp = append(resp, " COUNT "...)
		resp = strconv.AppendInt(resp, int64(len(order)), 10)
	}
	if m := bytes.TrimSpace(suffix); len(m) > 0 { // "(MODSEQ n)"
		resp = append(resp, ' ')
		resp = append(resp, bytes.Trim(m, "()")...)
	}
	return append(resp, "\r\n"...)
}

// parseSearchResponse reads "* SEARCH n n ... [(MODSEQ m)]": the numbers, and the rest before CRLF (the
// MODSEQ part, RFC 7162 section 3.1.5, which a SORT response carries the same way).
func parseSearchResponse(line []byte) (nums []uint32, suffix []byte, ok bool) {
	rest := trimEOL(line)
	if len(rest) < 8 || !bytes.EqualFold(rest[:8], []byte("* SEARCH")) {
		return nil, nil, false
	}
	rest = rest[8:]
	for {
		rest = bytes.TrimLeft(rest, " ")
		if len(rest) == 0 || rest[0] == '(' {
			break
		}
		end := bytes.IndexByte(rest, ' ')
		if end < 0 {
			end = len(rest)
		}
		n, err := strconv.ParseUint(string(rest[:end]), 10, 32)
		if err != nil {
			return nil, nil, false
		}
		nums = append(nums, uint32(n))
		rest = rest[end:]
	}
	if len(rest) > 0 {
		suffix = append([]byte(" "), rest...)
	}
	return nums, suffix, true
}

// errSortStale reports that the client's session knows a message the side connection no longer sees.
var errSortStale = errors.New("proxy: mailbox changed while sorting")

// sortOrder sorts the messages uids of mailbox m (enc its candidates) by crit with served sizes and served
// header fields, and returns their UIDs (byUID) or their sequence numbers in that order.
func (r *relay) sortOrder(ctx context.Context, m mailboxRef, enc, uids []uint32, crit []sortCrit, byUID bool) ([]uint32, error) {
	if len(uids) == 0 {
		return nil, nil
	}
	uids = sortedUnique(uids)
	set := imap.UIDSet{}
	for _, u := range uids {
		set.AddNum(imap.UID(u))
	}
	var cands []uint32
	for _, u := range uids {
		if _, ok := slices.BinarySearch(enc, u); ok {
			cands = append(cands, u)
		}
	}
	hm := r.srv.opts.HeaderMatcher
	// byHeader[i]: crit[i] is ordered by the relay over header fields (served ones for candidates).
	byHeader := make([]bool, len(crit))
	var fields []string
	for i, k := range crit {
		if hm != nil && headerSortKey(k.key) {
			byHeader[i] = true
			f := sortField(k.key)
			if !slices.Contains(fields, f) {
				fields = append(fields, f)
			}
		}
	}
	served := r.servedSortValues(ctx, m, cands, crit, byHeader)
	sizes := map[uint32]int64{}
	arrived := map[uint32]int64{} // INTERNALDATE, by which a message without a valid Date sorts under DATE
	keys := make([]map[uint32]string, len(crit))
	for i := range crit {
		if byHeader[i] {
			keys[i] = make(map[uint32]string, len(uids))
		}
	}
	ranks := make([]map[uint32]int, len(crit))
	var order, all []uint32
	err := r.side.do(ctx, m, func(c *backend.Conn) error {
		if err := c.Client.Noop().Wait(); err != nil {
			return err
		}
		if len(served) == 0 {
			// No candidate in the set: the server's order is the served order.
			sc := make([]imapclient.SortCriterion, len(crit))
			for i, k := range crit {
				sc[i] = imapclient.SortCriterion{Key: imapclient.SortKey(k.key), Reverse: k.reverse}
			}
			got, err := c.Client.UIDSort(&imapclient.SortOptions{SearchCriteria: &imap.SearchCriteria{UID: []imap.UIDSet{set}}, SortCriteria: sc}).Wait()
			if err != nil {
				return err
			}
			order = got
		} else {
			opts := &imap.FetchOptions{UID: true, RFC822Size: true, InternalDate: slices.Contains(fields, "Date")}
			var section *imap.FetchItemBodySection
			if len(fields) > 0 {
				section = &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: fields, Peek: true}
				opts.BodySection = []*imap.FetchItemBodySection{section}
			}
			cmd := c.Client.Fetch(set, opts)
			for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
				buf, err := msg.Collect()
				if err != nil {
					cmd.Close()
					return err
				}
				u := uint32(buf.UID)
				sizes[u] = buf.RFC822Size
				arrived[u] = int64(uint32(buf.InternalDate.Unix())) // as Dovecot's index keeps it
				if section != nil {
					hdr := buf.FindBodySection(section)
					for i, k := range crit {
						if byHeader[i] {
							keys[i][u], _ = hm.SortKey(hdr, k.key)
						}
					}
				}
			}
			if err := cmd.Close(); err != nil {
				return err
			}
			for i, k := range crit {
				if k.key == "SIZE" || byHeader[i] {
					continue
				}
				var lists [2][]uint32
				for j, rev := range []bool{false, true} {
					got, err := c.Client.UIDSort(&imapclient.SortOptions{
						SearchCriteria: &imap.SearchCriteria{UID: []imap.UIDSet{set}},
						SortCriteria:   []imapclient.SortCriterion{{Key: imapclient.SortKey(k.key), Reverse: rev}},
					}).Wait()
					if err != nil {
						return err
					}
					lists[j] = got
				}
				ranks[i] = tieRanks(lists[0], lists[1])
			}
		}
		if !byUID {
			got, err := uidSearch(c, &imap.SearchCriteria{})
			if err != nil {
				return err
			}
			all = make([]uint32, len(got))
			for i, u := range got {
				all[i] = uint32(u)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(served) > 0 {
		for u, v := range served {
			sizes[u] = v.size
			for i := range crit {
				if byHeader[i] {
					keys[i][u] = v.keys[i]
				}
			}
		}
		for i, k := range crit {
			if byHeader[i] && k.key == "DATE" {
				for u, v := range keys[i] {
					if v == "" {
						keys[i][u] = fmt.Sprintf("%010d", arrived[u])
					}
				}
			}
		}
		order = slices.Clone(uids)
		slices.SortFunc(order, func(a, b uint32) int {
			for i, k := range crit {
				var d int
				switch {
				case k.key == "SIZE":
					d = cmpInt(sizes[a], sizes[b])
				case byHeader[i]:
					d = strings.Compare(keys[i][a], keys[i][b])
				default:
					d = ranks[i][a] - ranks[i][b]
				}
				if k.reverse {
					d = -d
				}
				if d != 0 {
					return d
				}
			}
			return int(int64(a) - int64(b))
		})
	}
	if byUID {
		return order, nil
	}
	seqs := make([]uint32, 0, len(order))
	for _, u := range order {
		i, ok := slices.BinarySearch(all, u)
		if !ok {
			return nil, errSortStale
		}
		seqs = append(seqs, uint32(i+1))
	}
	return seqs, nil
}

// sortField names the header field a header sort key reads.
func sortField(key string) string {
	switch key {
	case "SUBJECT":
		return "Subject"
	case "FROM", "DISPLAYFROM":
		return "From"
	case "TO", "DISPLAYTO":
		return "To"
	case "DATE":
		return "Date"
	}
	return "Cc"
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// tieRanks ranks the messages of asc (UID SORT (K)) so that tied messages share a rank: a message ties with
// the one before it in asc when its UID is higher and it also follows it directly in desc (UID SORT
// (REVERSE K)), both lists breaking ties by ascending UID.
func tieRanks(asc, desc []uint32) map[uint32]int {
	next := make(map[uint32]uint32, len(desc))
	for i := 0; i+1 < len(desc); i++ {
		next[desc[i]] = desc[i+1]
	}
	ranks := make(map[uint32]int, len(asc))
	rank := 0
	for i, u := range asc {
		if i == 0 || !(asc[i-1] < u && next[asc[i-1]] == u) {
			rank++
		}
		ranks[u] = rank
	}
	return ranks
}

// servedValue is what a candidate is sorted by as served: its size and, for each criterion ordered by a
// header field, its sort key.
type servedValue struct {
	size int64
	keys []string
}

// servedSortValues returns the served size (len of the served copy, as RFC822.SIZE is computed, served.go)
// and the sort keys of the criteria marked in byHeader (HeaderMatcher.SortKey over the served header) of each
// candidate in uids that can be read: from the metadata store when it holds the message (MetaSource, its
// stored size and header), else from the served copy.
func (r *relay) servedSortValues(ctx context.Context, m mailboxRef, uids []uint32, crit []sortCrit, byHeader []bool) map[uint32]servedValue {
	out := make(map[uint32]servedValue, len(uids))
	var mu sync.Mutex
	var wg sync.WaitGroup
	ms, hm := r.srv.opts.MetaSource, r.srv.opts.HeaderMatcher
	value := func(size int64, header []byte) servedValue {
		v := servedValue{size: size, keys: make([]string, len(crit))}
		for i, k := range crit {
			if byHeader[i] {
				v.keys[i], _ = hm.SortKey(header, k.key)
			}
		}
		return v
	}
	for _, uid := range uids {
		if ms != nil {
			if meta, ok := ms.Meta(r.ref(m, uid)); ok {
				v := value(meta.Size, meta.Header)
				mu.Lock()
				out[uid] = v
				mu.Unlock()
				continue
			}
		}
		r.srv.rewriteSem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-r.srv.rewriteSem }()
			served, err := r.srv.opts.Rewriter.Rewrite(ctx, r.ref(m, uid), func() ([]byte, error) { return r.fetchRaw(ctx, m, uid) })
			if err != nil {
				return // expunged meanwhile, or unreadable: the upstream's size and header stand
			}
			v := value(int64(len(served)), served)
			mu.Lock()
			out[uid] = v
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// searchHook returns the untagged-response hook of the oldest pending command: a command that rewrites its
// SEARCH response waited for every earlier one (prepareSearch), and the server answers commands in order.
func (r *relay) searchHook() func([]byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 {
		return nil
	}
	return r.pending[0].untagged
}

// isSearchResponse reports whether line is a "* SEARCH" response.
func isSearchResponse(line []byte) bool {
	return len(line) >= 9 && bytes.EqualFold(line[2:8], []byte("SEARCH")) && (line[8] == ' ' || line[8] == '\r' || line[8] == '\n')
}
