package proxy

import (
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/smimeproxy/smimeproxy/backend"
)

// Expunge relays EXPUNGE and UID EXPUNGE (RFC 9051 section 6.4.3, RFC 4315 section 2.1). For CLOSE, imapserver
// calls it with a zero ExpungeWriter; the expunge is then left to the upstream CLOSE that Unselect sends
// (RFC 9051 section 6.4.1: no untagged EXPUNGE responses).
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	if *w == (imapserver.ExpungeWriter{}) {
		s.closing = true
		return nil
	}
	return s.do(ctx, func(up *backend.Conn) error {
		// Updates queued before this command go out first, in upstream order.
		if err := s.writeExpunges(w, up); err != nil {
			return err
		}
		var cmd *imapclient.ExpungeCommand
		if uids != nil {
			cmd = up.Client.UIDExpunge(*uids)
		} else {
			cmd = up.Client.Expunge()
		}
		for seq := cmd.Next(); seq != 0; seq = cmd.Next() {
			if err := w.WriteExpunge(seq); err != nil {
				cmd.Close()
				return err
			}
		}
		return cmd.Close()
	})
}

// writeExpunges writes queued EXPUNGE updates through w and puts the other updates back for Poll.
func (s *session) writeExpunges(w interface{ WriteExpunge(uint32) error }, up *backend.Conn) error {
	var rest []backend.Update
	for _, u := range up.TakeUpdates(true) {
		if u.Kind != backend.UpdateExpunge {
			rest = append(rest, u)
			continue
		}
		if err := w.WriteExpunge(u.Num); err != nil {
			return err
		}
	}
	up.PutBack(rest)
	return nil
}

// Store relays STORE and UID STORE (RFC 9051 section 6.4.6); the upstream's FETCH responses are relayed.
func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	return s.do(ctx, func(up *backend.Conn) error {
		cmd := up.Client.Store(numSet, flags, nil)
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			buf, err := msg.Collect()
			if err != nil {
				cmd.Close()
				return err
			}
			if buf.Flags == nil && buf.UID == 0 {
				continue
			}
			rw := w.CreateMessage(buf.SeqNum)
			if buf.UID != 0 {
				rw.WriteUID(buf.UID)
			}
			if buf.Flags != nil {
				rw.WriteFlags(buf.Flags)
			}
			if err := rw.Close(); err != nil {
				cmd.Close()
				return err
			}
		}
		return cmd.Close()
	})
}

// Copy relays COPY and UID COPY (RFC 9051 section 6.4.7) with the upstream's COPYUID (RFC 4315 section 3).
func (s *session) Copy(numSet imap.NumSet, dest string) (data *imap.CopyData, err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	err = s.do(ctx, func(up *backend.Conn) error {
		data, err = up.Client.Copy(numSet, dest).Wait()
		return err
	})
	if data != nil && data.UIDValidity == 0 {
		data = &imap.CopyData{}
	}
	return data, err
}

// Move relays MOVE and UID MOVE (RFC 6851; RFC 9051 section 6.4.8): COPYUID, then the upstream's EXPUNGEs.
func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	return s.do(ctx, func(up *backend.Conn) error {
		data, err := up.Client.Move(numSet, dest).Wait()
		if err != nil {
			return err
		}
		if data.UIDValidity != 0 {
			src, _ := data.SourceUIDs.(imap.UIDSet)
			dst, _ := data.DestUIDs.(imap.UIDSet)
			if err := w.WriteCopyData(&imap.CopyData{UIDValidity: data.UIDValidity, SourceUIDs: src, DestUIDs: dst}); err != nil {
				return err
			}
		}
		return s.writeExpunges(w, up)
	})
}
