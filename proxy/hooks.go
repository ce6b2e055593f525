package proxy

import (
	"context"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/internal/rewriting"
)

// Rewriter decides which messages are served rewritten (decrypted) instead of relayed.
//
// The proxy calls Candidate for every message of a FETCH that asks for a body-dependent item (RFC822.SIZE,
// ENVELOPE, BODY, BODYSTRUCTURE, BODY[...], BINARY[...], BINARY.SIZE[...], RFC822, RFC822.HEADER, RFC822.TEXT)
// and Rewrite for each candidate; every such item of a candidate is then computed from the rewritten bytes, so
// that RFC822.SIZE equals the length of BODY[], partial fetches are windows of it, and BODYSTRUCTURE and
// ENVELOPE describe it. Implementations must be safe for concurrent use (one proxy serves many sessions).
type Rewriter interface {
	// Candidate reports from a message's BODYSTRUCTURE whether it may need rewriting (cheap, no I/O).
	Candidate(bs imap.BodyStructure) bool
	// Rewrite returns the bytes to serve for the message (user, mailbox, UIDVALIDITY, UID identify it;
	// raw returns the upstream bytes BODY.PEEK[], each call in a fresh buffer that the Rewriter owns and may
	// overwrite). It must not fail: undecryptable messages come back with a status header. Implementations
	// cache.
	Rewrite(ctx context.Context, m MessageRef, raw func() ([]byte, error)) ([]byte, error)
}

// MessageRef names one message of one user's mailbox on the upstream server (internal/rewriting, shared with
// the Rewriter's implementation so that it need not import this package).
type MessageRef = rewriting.MessageRef

// The interfaces below are implemented by a Rewriter that decrypts (package decrypt) and set as fields of
// Options next to Rewriter (cmd/smimeproxy serve and demo wire them); each nil field turns its feature off, so
// a Rewriter that only rewrites FETCH (tests) needs none of them.

// CandidateFilter narrows which messages the proxy asks Rewriter.Candidate about: only messages matching the
// criteria (searched upstream, RFC 9051 section 6.4.4) can be candidates, so the BODYSTRUCTURE of only those
// is fetched. Without it every message is classified by its BODYSTRUCTURE.
type CandidateFilter interface {
	CandidateCriteria() *imap.SearchCriteria
}

// CacheProbe reports whether the Rewriter holds a message's served bytes, so that a UID FETCH of cached
// encrypted messages need not bring their ciphertext from the upstream server again.
type CacheProbe interface {
	Cached(m MessageRef) bool
}

// HeaderGuard names header fields whose presence makes a message a candidate besides its BODYSTRUCTURE: a
// plain message that arrives with a forged status field (X-Smimeproxy-Status) is rewritten too, so the field is
// removed before a client sees it. The proxy finds such messages with upstream searches (index.go, classify).
type HeaderGuard interface {
	// StatusFields names the header fields the Rewriter itself writes into served copies (searched with
	// HEADER <field> "", RFC 9051 section 6.4.4, which needs exact names). A plain message stored with one of
	// them is rewritten without it, so no plain message has one as served.
	StatusFields() []string
	// NeedsStrip reports whether a header (of an APPEND) holds such a field.
	NeedsStrip(header []byte) bool
}

// AppendGuard keeps plaintext that the proxy served from going back to the upstream server on APPEND
// (RFC 9051 section 6.3.12), e.g. when a client saves a decrypted message as a draft or copies it between
// accounts.
type AppendGuard interface {
	HeaderGuard
	// Origin returns the message a served copy came from, when header carries this process's unforgeable
	// marker for user.
	Origin(user string, header []byte) (MessageRef, bool)
	// ServedPlaintext reports whether header says the message is a decrypted copy (marker valid or not).
	ServedPlaintext(header []byte) bool
	// StripStatus returns msg without the status fields.
	StripStatus(msg []byte) []byte
	// EncryptAppend encrypts msg to user's own certificates; it fails when that is impossible, and the
	// APPEND is then refused.
	EncryptAppend(ctx context.Context, user string, msg []byte) ([]byte, error)
	// EmbedsServedPlaintext reports whether msg holds a served decrypted copy anywhere, not only in its
	// top-level header (e.g. forwarded as a message/rfc822 attachment, RFC 2046 section 5.2.1).
	EmbedsServedPlaintext(msg []byte) bool
	// MaxAppendBytes bounds the messages the relay reads whole into memory (to encrypt them, or to remove
	// status fields); 0 means the relay's default (64 MiB).
	MaxAppendBytes() int64
}

// TextMatcher lets SEARCH BODY and SEARCH TEXT (RFC 9051 section 6.4.4) look inside the served (decrypted)
// copies of rewritten messages.
type TextMatcher interface {
	// MatchText reports whether needle occurs in the decoded text of served (with headerToo, also in its
	// header fields).
	MatchText(served []byte, needle string, headerToo bool) bool
}

// StoredTextMatcher answers SEARCH BODY and SEARCH TEXT (RFC 9051 section 6.4.4) over a served copy that is not
// at hand, from what a store kept of it (TextMatcher.MatchText semantics), so a search need not decrypt the
// mailbox again.
type StoredTextMatcher interface {
	// MatchStoredText reports whether m's served copy matches; ok is false when the store cannot say.
	MatchStoredText(m MessageRef, needle string, headerToo bool) (match, ok bool)
}

// HeaderMatcher lets the header keys of SEARCH (RFC 9051 section 6.4.4: FROM, TO, CC, BCC, SUBJECT, HEADER) be
// answered from served copies instead of by the upstream server, which reads the stored header: for HEADER on
// the Rewriter's own fields (X-Smimeproxy-*) it would find only forged fields and never the ones the proxy
// adds, and for RFC 9788 header-protected mail it would see the outer header, not the protected one served.
type HeaderMatcher interface {
	// OwnsField reports whether a SEARCH HEADER on the field name must be answered from served copies.
	OwnsField(name string) bool
	// MatchHeader reports whether the top-level header of served has a field called name whose unfolded
	// value contains needle, case-insensitively; an empty needle matches any such field.
	MatchHeader(served []byte, name, needle string) bool
	// MatchSearchHeader reports whether the top-level header of served (a served copy, or the header block
	// MetaSource stored of it) matches the search key ("FROM", "TO", "CC", "BCC", "SUBJECT", or "HEADER" with
	// the field name) with needle as the upstream server would if it stored served: the served header is
	// what a client sees (for RFC 9788 header-protected mail the inner fields), the stored one is not.
	MatchSearchHeader(served []byte, key, name, needle string) bool
	// SortKey returns the string by which the upstream server would order served (a served copy, its stored
	// header block, or header fields fetched from the server) under the SORT key ("SUBJECT", "FROM", "TO",
	// "CC", "DATE", RFC 5256; "DISPLAYFROM", "DISPLAYTO", RFC 5957), compared octet by octet; for DATE ""
	// means no valid Date field (the server then uses the internal date). ok is false for another key.
	SortKey(served []byte, key string) (s string, ok bool)
}

// DerivedCache lets the proxy keep what it derives from a rewritten message (its BODYSTRUCTURE and ENVELOPE)
// next to the Rewriter's cached bytes, so repeated fetches do not parse the message again.
type DerivedCache interface {
	// Derived returns the value named name computed by compute from served, the bytes Rewrite returned for
	// m, computing it at most once while those bytes stay cached.
	Derived(m MessageRef, served []byte, name string, compute func() any) any
}

// MetaSource answers the FETCH items that need only a served copy's metadata (RFC822.SIZE, ENVELOPE, BODY,
// BODYSTRUCTURE, RFC822.HEADER and top-level BODY[HEADER...] sections, RFC 9051 section 6.4.5) from a store
// that outlives the served bytes, so a header sync neither fetches nor decrypts messages whose metadata is
// stored. The relay prefers it to Rewrite for a response whose body-dependent items are all of those.
type MetaSource interface {
	// Meta returns the stored metadata of m's served copy (MetaOf of the bytes Rewrite returned for it).
	Meta(m MessageRef) (ServedMeta, bool)
	// MetaRange calls f, in ascending UID order, with the stored metadata of the messages of m's mailbox from
	// UID m.UID on, at most max of them: one read of the store for the next responses of a FETCH over a range.
	// It returns the highest UID it covered (every stored message from m.UID through it was passed to f):
	// math.MaxUint32 when there were fewer than max, m.UID-1 when nothing could be read.
	MetaRange(m MessageRef, max int, f func(uid uint32, meta ServedMeta)) uint32
}

// MetaPruner drops the stored metadata of messages no longer in a mailbox: the relay calls it with every UID
// of mailbox m (m.UID unused) up to upTo when it has listed them all.
type MetaPruner interface {
	PruneMeta(m MessageRef, live func(uid uint32) bool, upTo uint32)
}

// IndexStore keeps the relay's classification of a mailbox (which UIDs are served rewritten, up to which UID
// every message is classified; index.go) across restarts, so a restarted proxy classifies only the messages
// that arrived meanwhile instead of searching the whole mailbox again. m.UID is unused.
type IndexStore interface {
	LoadIndex(m MessageRef) (IndexState, bool)
	SaveIndex(m MessageRef, st IndexState)
}

// IndexState is the classification of one mailbox in one UIDVALIDITY (defined in internal/rewriting, which
// the store's side shares without importing proxy).
type IndexState = rewriting.IndexState
