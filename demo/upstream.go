package demo

import (
	"fmt"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// upstreamSession is an IMAP session of the demo's upstream server: go-imap's imapmemserver session, with
// what it gets wrong against RFC 9051, RFC 6851 (MOVE) and RFC 4315 (UIDPLUS) redone on top of its public
// API, so that the demo's mail server answers as a real one (Dovecot) does. Clients, and the proxy relaying
// the upstream's bytes, see:
//
//   - MOVE: one EXPUNGE per moved message, numbered in the client's view. imapmemserver's own Move removes the
//     messages, which queues an EXPUNGE on the mailbox tracker for every session including this one (no source
//     is excluded); it then writes an EXPUNGE per message itself, its number mapped through that queue as if
//     the message were still there (one too high, or 0 for the last one); and imapserver polls the queue after
//     the command and writes each EXPUNGE again. Two EXPUNGEs per message, the first for the wrong message:
//     Thunderbird drops an untouched message from its list. Here MOVE is COPY, then \Deleted on exactly the
//     copied UIDs and UID EXPUNGE of them, all silent; the EXPUNGEs come only from the queue, after the
//     untagged OK [COPYUID] (RFC 6851 section 4.3), in order with any other pending updates.
//   - COPY and MOVE of messages that do not exist (a UID set matching nothing): a plain OK. imapmemserver
//     returns an empty COPYUID, which imapserver cannot encode: the client got half a response line followed
//     by NO [SERVERBUG], and the connection was out of step.
//   - SELECT: FLAGS and PERMANENTFLAGS list the system flags always, not only those some message has, so a
//     client can set \Seen or \Deleted in a mailbox where none has it yet (a flag missing from PERMANENTFLAGS
//     "cannot be changed permanently", RFC 9051 section 7.1, and a client may then keep it local only).
//   - EXAMINE (read-only, RFC 9051 section 6.3.3): nothing changes. FETCH BODY[] does not set \Seen, STORE and
//     EXPUNGE are ignored (as Dovecot does: "OK Store ignored with read-only mailbox"), MOVE is refused, CLOSE
//     expunges nothing; PERMANENTFLAGS is empty.
//
// EXPUNGE, UID EXPUNGE and COPY of existing messages were already right (their EXPUNGEs come from the same
// per-session queue) and are tested as such. Left as imapmemserver has them, being valid IMAP: flags are
// stored and sent in lower case ("\seen"; flag names compare case-insensitively), other sessions on the
// source mailbox of a MOVE see a FETCH FLAGS (\deleted) just before its EXPUNGE, and FETCH BODY[] reports
// the \Seen it sets in a separate FETCH response.
type upstreamSession struct {
	imapserver.SessionIMAP4rev2

	// mu is shared by all sessions of the server. MOVE holds it across its copy, store and expunge, and STORE
	// and EXPUNGE hold it, so no other session clears \Deleted or expunges halfway through a MOVE.
	mu       *sync.Mutex
	readOnly bool // the selected mailbox was opened with EXAMINE
}

var _ imapserver.SessionIMAP4rev2 = (*upstreamSession)(nil)

// newUpstreamSession returns a session of mem whose mailbox changes are serialized by mu.
func newUpstreamSession(mem *imapmemserver.Server, mu *sync.Mutex) (*upstreamSession, error) {
	s, ok := mem.NewSession().(imapserver.SessionIMAP4rev2)
	if !ok {
		return nil, fmt.Errorf("demo: upstream: imapmemserver session lacks IMAP4rev2")
	}
	return &upstreamSession{SessionIMAP4rev2: s, mu: mu}, nil
}

// systemFlags are the flags every mailbox accepts, in Dovecot's order.
var systemFlags = []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft}

var errReadOnly = &imap.Error{Type: imap.StatusResponseTypeNo, Code: "READ-ONLY", Text: "Mailbox is read-only"}

func (s *upstreamSession) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	data, err := s.SessionIMAP4rev2.Select(name, options)
	if err != nil {
		return nil, err
	}
	s.readOnly = options.ReadOnly
	flags := append([]imap.Flag(nil), systemFlags...)
	for _, f := range data.Flags { // those in use, lower case
		if !strings.HasPrefix(string(f), `\`) {
			flags = append(flags, f)
		}
	}
	data.Flags = flags
	if s.readOnly {
		data.PermanentFlags = []imap.Flag{}
	} else {
		data.PermanentFlags = append(append([]imap.Flag(nil), flags...), imap.FlagWildcard)
	}
	return data, nil
}

func (s *upstreamSession) Unselect() error {
	s.readOnly = false
	return s.SessionIMAP4rev2.Unselect()
}

// Fetch treats BODY[...] as BODY.PEEK[...] in a read-only mailbox. The response names the section the same
// either way.
func (s *upstreamSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if s.readOnly {
		for _, bs := range options.BodySection {
			bs.Peek = true
		}
	}
	return s.SessionIMAP4rev2.Fetch(w, numSet, options)
}

func (s *upstreamSession) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	if s.readOnly {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.SessionIMAP4rev2.Store(w, numSet, flags, options)
}

// Expunge is also what CLOSE runs; in a read-only mailbox it removes nothing.
func (s *upstreamSession) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	if s.readOnly {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.SessionIMAP4rev2.Expunge(w, uids)
}

// Copy answers a copy of no message with a plain OK (no COPYUID).
func (s *upstreamSession) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	data, err := s.SessionIMAP4rev2.Copy(numSet, dest)
	if err != nil || len(data.SourceUIDs) == 0 {
		return nil, err
	}
	return data, nil
}

// Move copies the messages, marks exactly those \Deleted and expunges them by UID. It writes only the
// untagged OK [COPYUID]: the expunge queued one EXPUNGE per message for every session of the mailbox, this
// one included, and imapserver writes this session's after Move returns, before the tagged OK.
func (s *upstreamSession) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if s.readOnly {
		return errReadOnly
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := s.SessionIMAP4rev2.Copy(numSet, dest)
	if err != nil {
		return err
	}
	if len(data.SourceUIDs) == 0 {
		return nil
	}
	uids := data.SourceUIDs
	deleted := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}
	if err := s.SessionIMAP4rev2.Store(nil, uids, deleted, &imap.StoreOptions{}); err != nil {
		return err
	}
	if err := s.SessionIMAP4rev2.Expunge(&imapserver.ExpungeWriter{}, &uids); err != nil {
		return err
	}
	return w.WriteCopyData(data)
}
