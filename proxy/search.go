package proxy

import (
	"cmp"
	"context"
	"slices"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/smimeproxy/smimeproxy/backend"
)

// Search serves SEARCH and UID SEARCH (RFC 9051 section 6.4.4) with the criteria imapserver parsed. The upstream
// is always sent a plain SEARCH; ESEARCH results (RFC 4731: MIN, MAX, COUNT) are computed here, and an empty
// result is an empty set of the right kind (go-imap writes no ALL then).
//
// When the criteria hold BODY or TEXT keys and the Rewriter is a TextMatcher, those keys are also evaluated
// over the served (decrypted) copies of the mailbox's encrypted messages (searchMerged); every other key is
// still evaluated upstream.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (data *imap.SearchData, err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	var nums []uint32
	var leaves []textLeaf
	textLeaves(criteria, &leaves)
	if tm, ok := s.srv.opts.Rewriter.(TextMatcher); ok && len(leaves) > 0 && s.mailbox != "" {
		nums, err = s.searchMerged(ctx, kind, criteria, leaves, tm)
	} else {
		nums, err = s.searchUpstream(ctx, kind, criteria)
	}
	if err != nil {
		return nil, err
	}
	out := &imap.SearchData{Count: uint32(len(nums))}
	if kind == imapserver.NumKindUID {
		set := imap.UIDSet{}
		for _, n := range nums {
			set.AddNum(imap.UID(n))
		}
		out.All = set
	} else {
		set := imap.SeqSet{}
		for _, n := range nums {
			set.AddNum(n)
		}
		out.All = set
	}
	if len(nums) > 0 {
		out.Min, out.Max = nums[0], nums[len(nums)-1]
	}
	return out, nil
}

// searchUpstream runs one SEARCH (or UID SEARCH) upstream and returns the numbers found, ascending.
func (s *session) searchUpstream(ctx context.Context, kind imapserver.NumKind, criteria *imap.SearchCriteria) ([]uint32, error) {
	var data *imap.SearchData
	err := s.do(ctx, func(up *backend.Conn) error {
		var cmd *imapclient.SearchCommand
		if kind == imapserver.NumKindUID {
			cmd = up.Client.UIDSearch(criteria, nil)
		} else {
			cmd = up.Client.Search(criteria, nil)
		}
		var err error
		data, err = cmd.Wait()
		return err
	})
	if err != nil {
		return nil, err
	}
	var nums []uint32
	switch all := data.All.(type) {
	case imap.UIDSet:
		uids, _ := all.Nums()
		for _, u := range uids {
			nums = append(nums, uint32(u))
		}
	case imap.SeqSet:
		nums, _ = all.Nums()
	}
	slices.Sort(nums)
	return slices.Compact(nums), nil
}

// textLeaf is one BODY (headerToo false) or TEXT (headerToo true) key of a search program.
type textLeaf struct {
	needle    string
	headerToo bool
}

// textLeaves appends the BODY and TEXT keys of c in a fixed order (this node's BODY, TEXT, then NOT and OR
// operands depth first), the order substituteText consumes them in.
func textLeaves(c *imap.SearchCriteria, out *[]textLeaf) {
	for _, b := range c.Body {
		*out = append(*out, textLeaf{b, false})
	}
	for _, t := range c.Text {
		*out = append(*out, textLeaf{t, true})
	}
	for i := range c.Not {
		textLeaves(&c.Not[i], out)
	}
	for i := range c.Or {
		textLeaves(&c.Or[i][0], out)
		textLeaves(&c.Or[i][1], out)
	}
}

// substituteText returns c with each BODY/TEXT key replaced by its known truth value: a true key is dropped
// (an AND with ALL), a false one becomes NOT ALL. c is not modified.
func substituteText(c *imap.SearchCriteria, truth []bool, k *int) imap.SearchCriteria {
	out := *c
	out.Body, out.Text, out.Not, out.Or = nil, nil, nil, nil
	falseHere := false
	for range len(c.Body) + len(c.Text) {
		if !truth[*k] {
			falseHere = true
		}
		*k++
	}
	for i := range c.Not {
		out.Not = append(out.Not, substituteText(&c.Not[i], truth, k))
	}
	for i := range c.Or {
		a := substituteText(&c.Or[i][0], truth, k)
		b := substituteText(&c.Or[i][1], truth, k)
		out.Or = append(out.Or, [2]imap.SearchCriteria{a, b})
	}
	if falseHere {
		out.Not = append(out.Not, imap.SearchCriteria{}) // NOT ALL
	}
	return out
}

// searchMerged evaluates criteria with its BODY/TEXT keys answered from the served copies of the selected
// mailbox's encrypted messages: the upstream answers for every other message (criteria AND NOT UID
// encrypted), and, for the encrypted messages grouped by the truth of their text keys, the upstream evaluates
// the remaining keys with those truths substituted (criteria' AND UID group). The union is the answer.
func (s *session) searchMerged(ctx context.Context, kind imapserver.NumKind, criteria *imap.SearchCriteria, leaves []textLeaf, tm TextMatcher) ([]uint32, error) {
	enc, err := s.encryptedUIDs(ctx)
	if err != nil {
		return nil, err
	}
	if len(enc) == 0 {
		return s.searchUpstream(ctx, kind, criteria)
	}
	var encSet imap.UIDSet
	for _, m := range enc {
		encSet.AddNum(m.uid)
	}
	rest := *criteria
	rest.Not = append(slices.Clip(rest.Not), imap.SearchCriteria{UID: []imap.UIDSet{encSet}})
	nums, err := s.searchUpstream(ctx, kind, &rest)
	if err != nil {
		return nil, err
	}
	up, err := s.upstream()
	if err != nil {
		return nil, err
	}
	groups := map[string]imap.UIDSet{}
	truths := map[string][]bool{}
	err = s.rewriteInOrder(ctx, up, enc, func(m msgMeta, served []byte) error {
		uid := m.uid
		truth := make([]bool, len(leaves))
		key := make([]byte, len(leaves))
		for i, l := range leaves {
			truth[i] = tm.MatchText(served, l.needle, l.headerToo)
			key[i] = '0'
			if truth[i] {
				key[i] = '1'
			}
		}
		set := groups[string(key)]
		set.AddNum(uid)
		groups[string(key)] = set
		truths[string(key)] = truth
		return nil
	})
	if err != nil {
		return nil, err
	}
	for key, set := range groups {
		k := 0
		c := substituteText(criteria, truths[key], &k)
		c.UID = append(slices.Clip(c.UID), set)
		found, err := s.searchUpstream(ctx, kind, &c)
		if err != nil {
			return nil, err
		}
		nums = append(nums, found...)
	}
	slices.Sort(nums)
	return slices.Compact(nums), nil
}

// encryptedUIDs returns the selected mailbox's messages that the Rewriter rewrites, by ascending UID: the
// upstream narrows the field with a header search for Content-Type values naming PKCS #7 or smime.p7m (RFC 8551
// section 3.2), and each hit's BODYSTRUCTURE goes to Rewriter.Candidate.
func (s *session) encryptedUIDs(ctx context.Context) ([]msgMeta, error) {
	pre, err := s.searchUpstream(ctx, imapserver.NumKindUID, &imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{
		{Header: []imap.SearchCriteriaHeaderField{{Key: "Content-Type", Value: "pkcs7"}}},
		{Header: []imap.SearchCriteriaHeaderField{{Key: "Content-Type", Value: "smime"}}},
	}}})
	if err != nil || len(pre) == 0 {
		return nil, err
	}
	var set imap.UIDSet
	for _, u := range pre {
		set.AddNum(imap.UID(u))
	}
	var out []msgMeta
	err = s.do(ctx, func(up *backend.Conn) error {
		cmd := up.Client.Fetch(set, &imap.FetchOptions{UID: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}})
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			buf, err := msg.Collect()
			if err != nil {
				cmd.Close()
				return err
			}
			if buf.UID != 0 && buf.BodyStructure != nil && s.srv.opts.Rewriter.Candidate(buf.BodyStructure) {
				out = append(out, msgMeta{seq: buf.SeqNum, uid: buf.UID, bs: buf.BodyStructure})
			}
		}
		return cmd.Close()
	})
	slices.SortFunc(out, func(a, b msgMeta) int { return cmp.Compare(a.uid, b.uid) })
	return out, err
}
