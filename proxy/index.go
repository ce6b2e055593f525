package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/backend"
)

// The relay must decide, before it writes a message's FETCH response, whether the message is served
// rewritten. It keeps, per user, mailbox and UIDVALIDITY, which UIDs are candidates (Rewriter.Candidate on
// their BODYSTRUCTURE, or carrying a status field a sender forged, HeaderGuard). Messages are immutable
// within a UIDVALIDITY (RFC 9051 section 2.3.1.1), so each is classified once, for all of the user's
// connections. Classifying new messages costs two or three upstream searches over the new UID range on a
// side connection, plus a BODYSTRUCTURE fetch of the few hits:
//
//	UID SEARCH UID n:*                                               the new range
//	UID SEARCH UID n:m HEADER X-Smimeproxy-Status ""                 forged status fields (OR over every
//	                                                                 name in HeaderGuard.StatusFields)
//	UID SEARCH UID n:m OR HEADER Content-Type pkcs7 HEADER Content-Type smime    (CandidateFilter)
//	UID FETCH <hits> (UID BODYSTRUCTURE)                             Rewriter.Candidate decides
//
// With an IndexStore (the metadata store) the classification outlives the process: the first classification
// of a mailbox in a process loads the stored one, lists the mailbox's UIDs (UID SEARCH UID 1:*, needed anyway
// to prune what was expunged meanwhile, also from the loaded candidates) and classifies only the UIDs above the
// stored highest one; each classification that learns something stores the result again.
//
// SEARCH HEADER needs exact field names, and the upstream server parses the header its own way: a plain
// message is found to carry a forged status field when the server sees a field of one of the names the
// Rewriter writes (anywhere in the header, folded or not, in any case). A plain message whose only status-like
// field has another X-Smimeproxy-* name, hides after a bare CR inside another field, or sits on a first line
// that starts with white space, is not found and is relayed as stored; every candidate (encrypted, undecryptable, forged) is served without any of them.

// maxIndexes bounds the mailboxes whose classification is kept.
const maxIndexes = 4096

type indexKey struct {
	user, mailbox string
	uidValidity   uint32
}

// mailboxIndex is the classification of one mailbox. mu is held while it is brought up to date, so
// concurrent lookups of new messages share one round of searches.
type mailboxIndex struct {
	mu      sync.Mutex
	checked uint32 // every UID up to checked is classified
	cands   map[uint32]bool
	// gone holds UIDs up to checked that were expunged before they could be classified: a session that has
	// not heard of the expunge yet may still be sent data for them.
	gone map[uint32]bool
	used uint64
	// listed: the mailbox's UIDs were listed once (the first classification in this process).
	listed bool
}

func (s *Server) index(user string, m mailboxRef) *mailboxIndex {
	k := indexKey{user, m.name, m.uidValidity}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.indexClock++
	ix := s.indexes[k]
	if ix == nil {
		if len(s.indexes) >= maxIndexes {
			var oldest indexKey
			var min uint64 = ^uint64(0)
			for k, v := range s.indexes {
				if v.used < min {
					oldest, min = k, v.used
				}
			}
			delete(s.indexes, oldest)
		}
		ix = &mailboxIndex{cands: map[uint32]bool{}, gone: map[uint32]bool{}}
		s.indexes[k] = ix
	}
	ix.used = s.indexClock
	return ix
}

// class is what the index knows of a message.
type class int

const (
	plainMsg  class = iota
	candidate       // served rewritten
	vanished        // expunged before it could be classified
)

// classOf classifies uid of mailbox m, classifying new messages first.
func (r *relay) classOf(ctx context.Context, m mailboxRef, uid uint32) (class, error) {
	ix := r.lastIndex(m)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if uid > ix.checked {
		if err := r.side.do(ctx, m, func(c *backend.Conn) error { return r.classify(c, m, ix) }); err != nil {
			return plainMsg, err
		}
	}
	switch {
	case ix.cands[uid]:
		return candidate, nil
	case ix.gone[uid] || uid > ix.checked:
		return vanished, nil
	}
	return plainMsg, nil
}

// lastIndex returns the index of m, remembering the last one asked for (upstreamLoop asks for the selected
// mailbox's once per FETCH response).
func (r *relay) lastIndex(m mailboxRef) *mailboxIndex {
	r.ixMu.Lock()
	defer r.ixMu.Unlock()
	if r.ixFor != m || r.ix == nil {
		r.ix, r.ixFor = r.srv.index(r.userName(), m), m
	}
	return r.ix
}

// candidates returns every candidate of mailbox m, ascending, after classifying new messages.
func (r *relay) candidates(ctx context.Context, m mailboxRef) ([]uint32, error) {
	ix := r.srv.index(r.userName(), m)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if err := r.side.do(ctx, m, func(c *backend.Conn) error { return r.classify(c, m, ix) }); err != nil {
		return nil, err
	}
	out := make([]uint32, 0, len(ix.cands))
	for u, ok := range ix.cands {
		if ok {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out, nil
}

// classifierVersion changes when the relay's way of classifying changes, so that a stored classification
// made the old way is not used.
const classifierVersion = "1"

// classifier identifies the rules the relay classifies by (IndexState.Classifier).
func (r *relay) classifier() string {
	h := sha256.New()
	io.WriteString(h, "smimeproxy index "+classifierVersion+"\x00")
	if hg := r.srv.opts.HeaderGuard; hg != nil {
		for _, f := range hg.StatusFields() {
			io.WriteString(h, f+"\x00")
		}
	}
	if cf := r.srv.opts.CandidateFilter; cf != nil {
		fmt.Fprintf(h, "%+v", *cf.CandidateCriteria())
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// load fills a fresh ix with m's stored classification, if there is one made by the same rules.
func (r *relay) load(m mailboxRef, ix *mailboxIndex) {
	is := r.srv.opts.IndexStore
	if is == nil || ix.checked != 0 {
		return
	}
	st, ok := is.LoadIndex(r.ref(m, 0))
	if !ok || st.Classifier != r.classifier() {
		return
	}
	for _, u := range st.Candidates {
		if u <= st.Checked {
			ix.cands[u] = true
		}
	}
	ix.checked = st.Checked
}

// save stores ix as m's classification.
func (r *relay) save(m mailboxRef, ix *mailboxIndex) {
	is := r.srv.opts.IndexStore
	if is == nil {
		return
	}
	st := IndexState{Classifier: r.classifier(), Checked: ix.checked, Candidates: make([]uint32, 0, len(ix.cands))}
	for u, ok := range ix.cands {
		if ok {
			st.Candidates = append(st.Candidates, u)
		}
	}
	slices.Sort(st.Candidates)
	is.SaveIndex(r.ref(m, 0), st)
}

// classify brings ix up to date over side connection c (mailbox open).
func (r *relay) classify(c *backend.Conn, m mailboxRef, ix *mailboxIndex) error {
	if err := c.Client.Noop().Wait(); err != nil {
		return err
	}
	listing := !ix.listed
	if listing {
		r.load(m, ix)
	}
	from := imap.UID(ix.checked + 1)
	searchFrom := from
	if listing {
		searchFrom = 1
	}
	newer, err := uidSearch(c, &imap.SearchCriteria{UID: []imap.UIDSet{{imap.UIDRange{Start: searchFrom, Stop: 0}}}})
	if err != nil {
		return err
	}
	var top imap.UID
	for _, u := range newer {
		top = max(top, u)
	}
	dropped := false
	if listing {
		// Every UID of the mailbox is known: stored metadata of any other is of an expunged message, and so
		// is a loaded candidate that is not listed (expunged while the proxy was down).
		live := make(map[uint32]bool, len(newer))
		for _, u := range newer {
			live[uint32(u)] = true
		}
		if p := r.srv.opts.MetaPruner; p != nil {
			p.PruneMeta(r.ref(m, 0), func(u uint32) bool { return live[u] }, uint32(top))
		}
		for u := range ix.cands {
			if !live[u] {
				delete(ix.cands, u)
				dropped = true
			}
		}
		ix.listed = true
	}
	if top < from {
		if dropped {
			r.save(m, ix)
		}
		return nil // nothing new ("n:*" names the last message even when its UID is below n)
	}
	exists := make(map[imap.UID]bool, int(top-from)+1)
	for _, u := range newer {
		if u >= from {
			exists[u] = true
		}
	}
	rng := imap.UIDSet{imap.UIDRange{Start: from, Stop: top}}
	if hg := r.srv.opts.HeaderGuard; hg != nil {
		var anyField *imap.SearchCriteria
		for _, f := range hg.StatusFields() {
			one := imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: f, Value: ""}}}
			if anyField == nil {
				anyField = &one
			} else {
				anyField = &imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{*anyField, one}}}
			}
		}
		if anyField != nil {
			crit := *anyField
			crit.UID = []imap.UIDSet{rng}
			forged, err := uidSearch(c, &crit)
			if err != nil {
				return err
			}
			for _, u := range forged {
				ix.cands[uint32(u)] = true
			}
		}
	}
	var confirm imap.UIDSet
	if cf := r.srv.opts.CandidateFilter; cf != nil {
		crit := *cf.CandidateCriteria()
		crit.UID = append(slices.Clip(crit.UID), rng)
		hits, err := uidSearch(c, &crit)
		if err != nil {
			return err
		}
		ms := r.srv.opts.MetaSource
		for _, u := range hits {
			if ix.cands[uint32(u)] {
				continue
			}
			if ms != nil {
				// Stored metadata is only of messages served rewritten, in this UIDVALIDITY: a candidate.
				if _, ok := ms.Meta(r.ref(m, uint32(u))); ok {
					ix.cands[uint32(u)] = true
					continue
				}
			}
			confirm.AddNum(u)
		}
	} else {
		confirm = rng
	}
	seen := map[imap.UID]bool{}
	if len(confirm) > 0 {
		cmd := c.Client.Fetch(confirm, &imap.FetchOptions{UID: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}})
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			buf, err := msg.Collect()
			if err != nil {
				cmd.Close()
				return err
			}
			seen[buf.UID] = true
			if buf.UID != 0 && buf.BodyStructure != nil && r.srv.opts.Rewriter.Candidate(buf.BodyStructure) {
				ix.cands[uint32(buf.UID)] = true
			}
		}
		if err := cmd.Close(); err != nil {
			return err
		}
	}
	// What vanished between the searches (or before them) cannot be classified.
	confirmed, _ := confirm.Nums()
	for _, u := range confirmed {
		if !seen[u] {
			exists[u] = false
		}
	}
	for u := from; u <= top; u++ {
		if !exists[u] && !ix.cands[uint32(u)] {
			ix.gone[uint32(u)] = true
		}
	}
	ix.checked = uint32(top)
	r.save(m, ix)
	return nil
}

// uidSearch runs UID SEARCH and returns the UIDs found: with RETURN (ALL) when the server has ESEARCH (RFC
// 4731), whose answer is a set with ranges, far shorter than a list of a large mailbox's UIDs.
func uidSearch(c *backend.Conn, crit *imap.SearchCriteria) ([]imap.UID, error) {
	var opts *imap.SearchOptions
	if caps := c.Client.Caps(); caps.Has(imap.CapESearch) || caps.Has(imap.CapIMAP4rev2) {
		opts = &imap.SearchOptions{ReturnAll: true}
	}
	data, err := c.Client.UIDSearch(crit, opts).Wait()
	if err != nil {
		return nil, err
	}
	uids, _ := data.All.(imap.UIDSet)
	nums, _ := uids.Nums()
	return nums, nil
}
