package proxy

import "context"

// The optional interfaces below are implemented by a Rewriter that decrypts (package decrypt). The proxy finds
// them with type assertions, so a Rewriter that only rewrites FETCH (tests) need not implement them.

// HeaderGuard names header fields whose presence makes a message a candidate besides its BODYSTRUCTURE: a
// plain message that arrives with a forged status field (X-Smimeproxy-Status) is rewritten too, so the field is
// removed before a client sees it. The proxy finds such messages with upstream searches (forged.go).
type HeaderGuard interface {
	// StatusFields names the header fields (searched with HEADER <field> "", RFC 9051 section 6.4.4).
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
}

// TextMatcher lets SEARCH BODY and SEARCH TEXT (RFC 9051 section 6.4.4) look inside the served (decrypted)
// copies of rewritten messages.
type TextMatcher interface {
	// MatchText reports whether needle occurs in the decoded text of served (with headerToo, also in its
	// header fields).
	MatchText(served []byte, needle string, headerToo bool) bool
}

// DerivedCache lets the proxy keep what it derives from a rewritten message (its BODYSTRUCTURE and ENVELOPE)
// next to the Rewriter's cached bytes, so repeated fetches do not parse the message again.
type DerivedCache interface {
	// Derived returns the value named name computed by compute from served, the bytes Rewrite returned for
	// m, computing it at most once while those bytes stay cached.
	Derived(m MessageRef, served []byte, name string, compute func() any) any
}
