package proxy

import (
	"context"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// forgedIndex remembers which messages of the selected mailbox carry a header field named by
// HeaderGuard.StatusFields, so that a FETCH need not fetch those fields for every message. Messages are
// immutable within a UIDVALIDITY (RFC 9051 section 2.3.1.1), so each message is searched once.
type forgedIndex struct {
	mailbox     string
	uidValidity uint32
	checked     imap.UID    // every message with a UID up to checked has been searched
	forged      imap.UIDSet // those that carry a status field
}

// forgedPredicate brings the index up to date for the selected mailbox and returns a function that reports
// whether a message must be rewritten because of its header fields: it carries a status field, or it is newer
// than the last search (it arrived since; the Rewriter then strips whatever it carries).
//
// Two upstream searches per call at most, over new messages only: the highest UID now (UID n:*, RFC 9051
// section 6.4.4), then HEADER <field> "" (a field present, any value) over the new range. The order matters:
// a message that arrives between them has a higher UID than the range searched and counts as new.
func (s *session) forgedPredicate(ctx context.Context, hg HeaderGuard) (func(imap.UID) bool, error) {
	fi := &s.forged
	if fi.mailbox != s.mailbox || fi.uidValidity != s.uidValidity {
		*fi = forgedIndex{mailbox: s.mailbox, uidValidity: s.uidValidity}
	}
	fields := hg.StatusFields()
	pred := func(uid imap.UID) bool { return uid > fi.checked || fi.forged.Contains(uid) }
	if len(fields) == 0 {
		return func(imap.UID) bool { return false }, nil
	}
	newer, err := s.searchUpstream(ctx, imapserver.NumKindUID, &imap.SearchCriteria{
		UID: []imap.UIDSet{{imap.UIDRange{Start: fi.checked + 1, Stop: 0}}}})
	if err != nil {
		return nil, err
	}
	if len(newer) == 0 || imap.UID(newer[len(newer)-1]) <= fi.checked {
		return pred, nil // nothing new ("n:*" names the last message even when its UID is below n)
	}
	top := imap.UID(newer[len(newer)-1])
	crit := &imap.SearchCriteria{UID: []imap.UIDSet{{imap.UIDRange{Start: fi.checked + 1, Stop: top}}}}
	var anyField *imap.SearchCriteria
	for _, f := range fields {
		one := imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: f, Value: ""}}}
		if anyField == nil {
			anyField = &one
		} else {
			anyField = &imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{*anyField, one}}}
		}
	}
	crit.Header, crit.Or = anyField.Header, anyField.Or
	found, err := s.searchUpstream(ctx, imapserver.NumKindUID, crit)
	if err != nil {
		return nil, err
	}
	for _, u := range found {
		if imap.UID(u) > fi.checked && imap.UID(u) <= top {
			fi.forged.AddNum(imap.UID(u))
		}
	}
	fi.checked = top
	return pred, nil
}
