// Package rewriting holds what the relay (package proxy) and the rewriter that decrypts (package decrypt) share
// about a served copy, so that neither imports the other: the name of the upstream message a copy is served
// for (MessageRef), the metadata of a served copy (Meta), and the error of a user without a certificate to
// encrypt appended messages to.
package rewriting

import (
	"errors"

	"github.com/smimeproxy/smimeproxy/internal/imapfmt"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// MessageRef names one message of one user's mailbox on the upstream server. UIDValidity and UID are the
// upstream's (RFC 9051 section 2.3.1.1), so a (User, Mailbox, UIDValidity, UID) tuple never names two
// different messages.
type MessageRef struct {
	User, Mailbox    string
	UIDValidity, UID uint32
}

// ErrNoCertificate is returned (wrapped) when a user has no certificate to encrypt an appended message to.
var ErrNoCertificate = errors.New("no certificate of the user to encrypt to")

// Meta is the metadata of a served copy from which the relay answers RFC822.SIZE, ENVELOPE, BODY,
// BODYSTRUCTURE, RFC822.HEADER and the top-level BODY[HEADER], BODY[HEADER.FIELDS (...)] and
// BODY[HEADER.FIELDS.NOT (...)] sections (with partials) exactly as from the copy itself (RFC 9051 section
// 6.4.5).
type Meta struct {
	Size int64
	// Header is the top-level header, with the empty line that ends it (RFC822.HEADER).
	Header []byte
	// Envelope, Body and BodyStructure are FETCH values as the relay sends them (internal/imapfmt).
	Envelope, Body, BodyStructure []byte
}

// MetaOf computes the metadata of served, a message's served copy.
func MetaOf(served []byte) Meta {
	header, _ := mimepart.SplitBlock(served)
	return Meta{Size: int64(len(served)), Header: header, Envelope: imapfmt.Envelope(served),
		Body: imapfmt.BodyStructure(served, false), BodyStructure: imapfmt.BodyStructure(served, true)}
}

// IndexState is the relay's classification of one mailbox in one UIDVALIDITY (proxy.IndexStore), as the
// metadata store keeps it across restarts.
type IndexState struct {
	// Classifier identifies the rules the classification was made under (the relay's version of them, the
	// status fields and the candidate criteria): a state made under others is not used.
	Classifier string
	// Checked: every UID up to it was classified.
	Checked uint32
	// Candidates are the UIDs served rewritten, ascending, each at most Checked.
	Candidates []uint32
}
