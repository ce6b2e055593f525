package proxy

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/backend"
)

// CONTEXT=SEARCH (RFC 5267 section 4): after SEARCH RETURN (UPDATE) the server keeps the search alive and
// tells the client, with ESEARCH ADDTO and REMOVEFROM, how its result changes. When the relay rewrote the
// program (search.go), the server keeps evaluating the rewritten one:
//
//	(OR UID <M> (BODY x NOT UID <E>)) <rest>
//
// which is exact for every message classified at the time of the search (UIDs up to the index's checked
// value) and for every later plain message, but not for a later encrypted one: the server looks for x in its
// ciphertext. The relay keeps such a context (searchCtx) and takes over the judgement of those messages
// ("extras"): when they appear (EXISTS) it classifies them, evaluates the content keys over the served copy
// and the rest of the program from their flags and UID (context_prog.go), and sends the client ADDTO for the
// ones that match right after the EXISTS, before the tagged response of the command that caused it. Flag
// changes (FETCH FLAGS in the client's stream; after STORE, flags read over a side connection, for
// STORE.SILENT) and expunges (EXPUNGE, VANISHED) of extras give REMOVEFROM or ADDTO the same way, and the
// server's own ADDTO and REMOVEFROM for extras are cut out of its ESEARCH responses. Positions are 0, as
// Dovecot sends for SEARCH (RFC 5267 section 4.2: the result of SEARCH is ordered by number).
//
// To name extras by sequence number the relay counts the session's messages (EXISTS, EXPUNGE, VANISHED) and
// knows the highest UID of the session's messages while a context lives; new sequence numbers are the lowest
// UIDs above it, read over a side connection.
//
// Not every program can be judged without the upstream's session; for those (and beyond maxSearchContexts)
// RETURN (UPDATE) is refused with NO [CANNOT] (RFC 5530) rather than left to drift. CANCELUPDATE, a mailbox
// change and a server that declines (NOUPDATE) end contexts.

// maxSearchContexts bounds the contexts the relay keeps per session (Dovecot keeps at most 10).
const maxSearchContexts = 5

// maxContextExtras bounds the extras one context tracks; past it the context is dropped with a warning.
const maxContextExtras = 10000

type extraMsg struct {
	uid, seq uint32
	hits     []bool          // content keys, over the served copy
	flags    map[string]bool // lower case
	in       bool            // in the client's result
}

type searchCtx struct {
	tag     string
	uid     bool // UID SEARCH: the updates name UIDs
	keys    []textKey
	prog    *progNode
	checked uint32 // UIDs up to checked are judged by the server
	extras  []*extraMsg
}

// contextSet is a session's contexts and what the relay knows of the selected mailbox's messages.
type contextSet struct {
	mu     sync.Mutex
	count  uint32 // messages in the session (EXISTS minus EXPUNGE)
	maxUID uint32 // highest UID of the session's messages, while list is not empty
	list   []*searchCtx
}

// updateSearch reports whether a SEARCH or UID SEARCH asks for updates, and whether its other RETURN options
// are ones the relay can keep a context for.
func updateSearch(u unit, name string) (update, supported bool) {
	if name != "SEARCH" && name != "UID SEARCH" {
		return false, true
	}
	s := &scanner{b: u}
	s.next()
	if name == "UID SEARCH" {
		s.next()
	}
	s.next()
	t, _ := s.next()
	if t.kind != tokAtom || !strings.EqualFold(string(t.val), "RETURN") {
		return false, true
	}
	if o, _ := s.next(); o.kind != tokOpen {
		return false, true
	}
	supported = true
	for {
		t, err := s.next()
		if err != nil || t.kind != tokAtom {
			break
		}
		switch strings.ToUpper(string(t.val)) {
		case "UPDATE":
			update = true
		case "ALL", "MIN", "MAX", "COUNT", "SAVE":
		default:
			supported = false
		}
	}
	return update, supported
}

// contextProgram checks that the relay can keep a context for the program at progStart; it returns the
// reason for NO [CANNOT] otherwise.
func (r *relay) contextProgram(u unit, progStart int, keys []textKey, supported bool) (*progNode, string) {
	if !supported {
		return nil, "RETURN (UPDATE) with these options is not offered by smimeproxy"
	}
	keyAt := make(map[int]int, len(keys))
	for i, k := range keys {
		keyAt[k.start] = i
	}
	prog, ok := parseContextProgram(&scanner{b: u, pos: progStart}, keyAt)
	if !ok {
		return nil, "smimeproxy cannot keep this search up to date for encrypted messages; search without UPDATE"
	}
	r.sctx.mu.Lock()
	n := len(r.sctx.list)
	r.sctx.mu.Unlock()
	if n >= maxSearchContexts {
		return nil, "Too many search contexts with encrypted messages"
	}
	return prog, ""
}

// openContext starts keeping the context of command c over mailbox m. It returns false when the session's
// messages cannot be told apart from the mailbox's right now (another session is changing it).
func (r *relay) openContext(c *command, m mailboxRef, keys []textKey, prog *progNode) bool {
	ctx := r.ctx
	ix := r.srv.index(r.userName(), m)
	ix.mu.Lock()
	checked := ix.checked
	ix.mu.Unlock()
	cs := &r.sctx
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.list) == 0 {
		var data *imap.SearchData
		err := r.side.do(ctx, m, func(bc *backend.Conn) error {
			var err error
			data, err = bc.Client.UIDSearch(&imap.SearchCriteria{}, &imap.SearchOptions{ReturnCount: true, ReturnMax: true}).Wait()
			return err
		})
		if err != nil || data.Count != cs.count {
			return false
		}
		cs.maxUID = data.Max
	}
	sc := &searchCtx{tag: c.tag, uid: c.name == "UID SEARCH", keys: keys, prog: prog, checked: checked}
	cs.list = append(cs.list, sc)
	prev := c.tagged
	c.tagged = func(line []byte) []byte {
		if prev != nil {
			line = prev(line)
		}
		if !taggedOK(line) {
			r.dropContexts(func(x *searchCtx) bool { return x == sc })
		}
		return line
	}
	return true
}

func taggedOK(line []byte) bool {
	_, rest, _ := bytes.Cut(line, []byte(" "))
	return len(rest) >= 2 && bytes.EqualFold(rest[:2], []byte("OK"))
}

// prepareCancelUpdate ends the contexts CANCELUPDATE names once the server agreed (RFC 5267 section 4.3).
func (r *relay) prepareCancelUpdate(c *command, u unit) {
	s := &scanner{b: u}
	s.next()
	s.next()
	tags := map[string]bool{}
	for {
		t, err := s.next()
		if err != nil {
			break
		}
		v, ok := astring(t)
		if !ok {
			break
		}
		tags[string(v)] = true
	}
	c.tagged = func(line []byte) []byte {
		if taggedOK(line) {
			r.dropContexts(func(x *searchCtx) bool { return tags[x.tag] })
		}
		return line
	}
}

// dropContexts ends the contexts drop reports true for.
func (r *relay) dropContexts(drop func(*searchCtx) bool) {
	r.sctx.mu.Lock()
	r.sctx.list = slices.DeleteFunc(r.sctx.list, drop)
	r.sctx.mu.Unlock()
}

// mailboxChanged ends every context (the selected mailbox changed or was closed) and resets the count.
func (r *relay) mailboxChanged() {
	r.sctx.mu.Lock()
	r.sctx.list = nil
	r.sctx.count = 0
	r.sctx.mu.Unlock()
}

// selectPending reports whether a SELECT or EXAMINE is in progress (its EXISTS is the new mailbox's).
func (r *relay) selectPending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.pending, func(c *command) bool { return c.name == "SELECT" || c.name == "EXAMINE" })
}

// esearchLine formats an update of context sc.
func (sc *searchCtx) esearchLine(item string, nums []uint32) []byte {
	slices.Sort(nums)
	var b strings.Builder
	b.WriteString(`* ESEARCH (TAG "` + sc.tag + `")`)
	if sc.uid {
		b.WriteString(" UID")
	}
	b.WriteString(" " + item + " (0 " + uidSetString(slices.Compact(nums)) + ")\r\n")
	return []byte(b.String())
}

func (sc *searchCtx) name(e *extraMsg) uint32 {
	if sc.uid {
		return e.uid
	}
	return e.seq
}

// judge re-evaluates the extras changed reports true for and returns the updates for the client.
func (sc *searchCtx) judge(changed func(*extraMsg) bool) [][]byte {
	var add, remove []uint32
	for _, e := range sc.extras {
		if !changed(e) {
			continue
		}
		switch in := sc.prog.eval(e); {
		case in && !e.in:
			add = append(add, sc.name(e))
		case !in && e.in:
			remove = append(remove, sc.name(e))
		}
		e.in = sc.prog.eval(e)
	}
	var out [][]byte
	if len(remove) > 0 {
		out = append(out, sc.esearchLine("REMOVEFROM", remove))
	}
	if len(add) > 0 {
		out = append(out, sc.esearchLine("ADDTO", add))
	}
	return out
}

// ctxExists handles "* n EXISTS": new messages that are encrypted become extras of the live contexts, and the
// ones that match are added. It returns the updates to send after the EXISTS.
func (r *relay) ctxExists(n uint32) [][]byte {
	if r.selectPending() {
		r.mailboxChanged()
	}
	cs := &r.sctx
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.list) == 0 || n <= cs.count {
		cs.count = n
		return nil
	}
	need := int(n - cs.count)
	m := r.selected()
	ctx := r.ctx
	var uids []uint32
	err := r.side.do(ctx, m, func(c *backend.Conn) error {
		if err := c.Client.Noop().Wait(); err != nil {
			return err
		}
		found, err := uidSearch(c, &imap.SearchCriteria{UID: []imap.UIDSet{{imap.UIDRange{Start: imap.UID(cs.maxUID + 1), Stop: 0}}}})
		for _, u := range found {
			if uint32(u) > cs.maxUID {
				uids = append(uids, uint32(u))
			}
		}
		return err
	})
	slices.Sort(uids)
	if err != nil || len(uids) < need {
		// The new messages were expunged before they could be named: their numbers cannot be matched to
		// UIDs any more, so the contexts could only drift. They are dropped (the server still updates the
		// client for every other message) and the loss is logged.
		r.log.Warn("search context lost track of new messages; encrypted ones will not be added", "err", err)
		cs.list = nil
		cs.count = n
		return nil
	}
	uids = uids[:need]
	var fresh []*extraMsg // one per new candidate, shared flags
	for i, uid := range uids {
		if cl, err := r.classOf(ctx, m, uid); err != nil || cl != candidate {
			continue
		}
		fresh = append(fresh, &extraMsg{uid: uid, seq: cs.count + 1 + uint32(i)})
	}
	cs.count, cs.maxUID = n, uids[len(uids)-1]
	if len(fresh) == 0 {
		return nil
	}
	flags := r.sideFlags(m, fresh)
	var out [][]byte
	for _, sc := range cs.list {
		var mine []*extraMsg
		for _, f := range fresh {
			if f.uid <= sc.checked {
				continue
			}
			e := &extraMsg{uid: f.uid, seq: f.seq, flags: flags[f.uid]}
			e.hits = r.matchKeys(m, f.uid, sc.keys)
			mine = append(mine, e)
		}
		sc.extras = append(sc.extras, mine...)
		out = append(out, sc.judge(func(e *extraMsg) bool { return slices.Contains(mine, e) })...)
	}
	cs.list = slices.DeleteFunc(cs.list, func(sc *searchCtx) bool {
		if len(sc.extras) > maxContextExtras {
			r.log.Warn("search context tracks too many encrypted messages; dropped")
			return true
		}
		return false
	})
	return out
}

// sideFlags reads the flags of the messages in l over a side connection.
func (r *relay) sideFlags(m mailboxRef, l []*extraMsg) map[uint32]map[string]bool {
	var set imap.UIDSet
	for _, e := range l {
		set.AddNum(imap.UID(e.uid))
	}
	out := map[uint32]map[string]bool{}
	r.side.do(r.ctx, m, func(c *backend.Conn) error {
		cmd := c.Client.Fetch(set, &imap.FetchOptions{UID: true, Flags: true})
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			buf, err := msg.Collect()
			if err != nil {
				break
			}
			f := map[string]bool{}
			for _, x := range buf.Flags {
				f[strings.ToLower(string(x))] = true
			}
			out[uint32(buf.UID)] = f
		}
		return cmd.Close()
	})
	return out
}

// matchKeys evaluates keys over the served copy of uid (all false when it cannot be read).
func (r *relay) matchKeys(m mailboxRef, uid uint32, keys []textKey) []bool {
	hits := make([]bool, len(keys))
	served, err := r.srv.opts.Rewriter.Rewrite(r.ctx, r.ref(m, uid), func() ([]byte, error) { return r.fetchRaw(r.ctx, m, uid) })
	if err != nil {
		return hits
	}
	tm := r.srv.opts.TextMatcher
	hm := r.srv.opts.HeaderMatcher
	for i, k := range keys {
		hits[i] = keyHit(served, k, tm, hm)
	}
	return hits
}

// ctxFetch handles a FETCH response with FLAGS for an extra; it returns the updates to send after it.
func (r *relay) ctxFetch(line []byte, seq uint32) [][]byte {
	cs := &r.sctx
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.list) == 0 {
		return nil
	}
	var flags map[string]bool
	var out [][]byte
	for _, sc := range cs.list {
		for _, e := range sc.extras {
			if e.seq != seq {
				continue
			}
			if flags == nil {
				var ok bool
				if flags, ok = parseFlagList(line); !ok {
					return nil
				}
			}
			e.flags = flags
			out = append(out, sc.judge(func(x *extraMsg) bool { return x == e })...)
		}
	}
	return out
}

// ctxRefresh reads the flags of every extra again (after STORE: STORE.SILENT sends no FETCH) and returns the
// updates to send before the tagged response.
func (r *relay) ctxRefresh() [][]byte {
	cs := &r.sctx
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var all []*extraMsg
	for _, sc := range cs.list {
		all = append(all, sc.extras...)
	}
	if len(all) == 0 {
		return nil
	}
	flags := r.sideFlags(r.selected(), all)
	var out [][]byte
	for _, sc := range cs.list {
		for _, e := range sc.extras {
			if f, ok := flags[e.uid]; ok {
				e.flags = f
			}
		}
		out = append(out, sc.judge(func(*extraMsg) bool { return true })...)
	}
	return out
}

// ctxExpunge handles "* n EXPUNGE"; it returns the REMOVEFROM to send before it (the number names the message
// only until the EXPUNGE).
func (r *relay) ctxExpunge(n uint32) [][]byte {
	cs := &r.sctx
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.count > 0 {
		cs.count--
	}
	var out [][]byte
	for _, sc := range cs.list {
		sc.extras = slices.DeleteFunc(sc.extras, func(e *extraMsg) bool {
			if e.seq == n {
				if e.in {
					out = append(out, sc.esearchLine("REMOVEFROM", []uint32{sc.name(e)}))
				}
				return true
			}
			if e.seq > n {
				e.seq--
			}
			return false
		})
	}
	return out
}

// ctxVanished handles "* VANISHED uid-set" (QRESYNC, RFC 7162 section 3.2.10); VANISHED (EARLIER) changes
// nothing in the session.
func (r *relay) ctxVanished(line []byte) [][]byte {
	s := &scanner{b: line}
	s.next()
	s.next()
	t, _ := s.next()
	if t.kind == tokOpen {
		return nil // (EARLIER)
	}
	set, ok := parseNumSet(string(t.val))
	if !ok {
		return nil
	}
	var total uint32
	for _, rg := range set {
		total += rg[1] - rg[0] + 1
	}
	below := func(uid uint32) uint32 {
		var k uint32
		for _, rg := range set {
			if rg[0] < uid {
				k += min(rg[1], uid-1) - rg[0] + 1
			}
		}
		return k
	}
	cs := &r.sctx
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.count -= min(cs.count, total)
	var out [][]byte
	for _, sc := range cs.list {
		var gone []uint32
		sc.extras = slices.DeleteFunc(sc.extras, func(e *extraMsg) bool {
			if below(e.uid+1) != below(e.uid) {
				if e.in {
					gone = append(gone, sc.name(e))
				}
				return true
			}
			return false
		})
		if len(gone) > 0 {
			out = append(out, sc.esearchLine("REMOVEFROM", gone))
		}
		for _, e := range sc.extras {
			e.seq -= below(e.uid)
		}
	}
	return out
}

// ctxFilter cuts the extras out of the server's ESEARCH ADDTO and REMOVEFROM for a context the relay keeps
// (the server judges them by their ciphertext); nil when nothing is left.
func (r *relay) ctxFilter(line []byte) []byte {
	s := &scanner{b: line}
	s.next() // *
	s.next() // ESEARCH
	if t, _ := s.next(); t.kind != tokOpen {
		return line
	}
	if t, _ := s.next(); t.kind != tokAtom || !strings.EqualFold(string(t.val), "TAG") {
		return line
	}
	tt, _ := s.next()
	tag, _ := astring(tt)
	if c, _ := s.next(); c.kind != tokClose {
		return line
	}
	cs := &r.sctx
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var sc *searchCtx
	for _, x := range cs.list {
		if x.tag == string(tag) {
			sc = x
		}
	}
	if sc == nil || len(sc.extras) == 0 {
		return line
	}
	mine := map[uint32]bool{}
	for _, e := range sc.extras {
		mine[sc.name(e)] = true
	}
	out := append([]byte(nil), line[:s.pos]...)
	kept := false
	for {
		t, err := s.next()
		if err != nil || t.kind != tokAtom {
			break
		}
		item := strings.ToUpper(string(t.val))
		if item != "ADDTO" && item != "REMOVEFROM" {
			// UID, or a result item (ALL, COUNT, ...): copied as is
			end := t.end
			if item != "UID" {
				v, _ := s.next()
				if e, err := s.skipValue(v); err == nil {
					end = e
				}
			}
			out = append(out, line[t.start-1:end]...)
			kept = kept || item != "UID"
			continue
		}
		if o, _ := s.next(); o.kind != tokOpen {
			return line
		}
		pos, _ := s.next()
		nums, _ := s.next()
		if c, _ := s.next(); c.kind != tokClose {
			return line
		}
		set, ok := parseNumSet(string(nums.val))
		if !ok {
			return line
		}
		rest := subtractNums(set, mine)
		if rest == "" {
			continue
		}
		out = append(out, " "+item+" ("+string(pos.val)+" "+rest+")"...)
		kept = true
	}
	if !kept {
		return nil
	}
	return append(out, "\r\n"...)
}

// subtractNums formats set without the numbers in drop.
func subtractNums(set [][2]uint32, drop map[uint32]bool) string {
	var parts []string
	for _, rg := range set {
		var cut []uint32
		for n := range drop {
			if n >= rg[0] && n <= rg[1] {
				cut = append(cut, n)
			}
		}
		slices.Sort(cut)
		lo := rg[0]
		for _, c := range append(cut, rg[1]+1) {
			if c > lo {
				if c-1 == lo {
					parts = append(parts, strconv.FormatUint(uint64(lo), 10))
				} else {
					parts = append(parts, strconv.FormatUint(uint64(lo), 10)+":"+strconv.FormatUint(uint64(c-1), 10))
				}
			}
			lo = c + 1
		}
	}
	return strings.Join(parts, ",")
}
