package proxy

import (
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/smimeproxy/smimeproxy/backend"
)

// Select relays SELECT and EXAMINE (RFC 9051 sections 6.3.2, 6.3.3) with the upstream's UIDVALIDITY, UIDNEXT
// and message count.
func (s *session) Select(mailbox string, options *imap.SelectOptions) (data *imap.SelectData, err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	s.mailbox, s.uidValidity = "", 0
	err = s.do(ctx, func(up *backend.Conn) error {
		var opts *imap.SelectOptions
		if options != nil {
			opts = &imap.SelectOptions{ReadOnly: options.ReadOnly}
		}
		data, err = up.Client.Select(mailbox, opts).Wait()
		up.DropUpdates()
		return err
	})
	if err != nil {
		return nil, err
	}
	s.mailbox, s.uidValidity, s.readOnly = mailbox, data.UIDValidity, options != nil && options.ReadOnly
	return data, nil
}

// Unselect relays UNSELECT (RFC 3691; RFC 9051 section 6.4.2). CLOSE is also served through Unselect after
// imapserver has run EXPUNGE.
func (s *session) Unselect() (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	closing := s.closing
	s.closing = false
	err = s.do(ctx, func(up *backend.Conn) error {
		var cmd *imapclient.Command
		if closing {
			cmd = up.Client.UnselectAndExpunge()
		} else {
			cmd = up.Client.Unselect()
		}
		err := cmd.Wait()
		up.DropUpdates()
		return err
	})
	s.mailbox, s.uidValidity = "", 0
	return err
}

// Create relays CREATE (RFC 9051 section 6.3.4), including USE (RFC 6154 section 3).
func (s *session) Create(mailbox string, options *imap.CreateOptions) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	return s.do(ctx, func(up *backend.Conn) error { return up.Client.Create(mailbox, options).Wait() })
}

// Delete relays DELETE (RFC 9051 section 6.3.5).
func (s *session) Delete(mailbox string) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	return s.do(ctx, func(up *backend.Conn) error { return up.Client.Delete(mailbox).Wait() })
}

// Rename relays RENAME (RFC 9051 section 6.3.6).
func (s *session) Rename(mailbox, newName string, options *imap.RenameOptions) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	return s.do(ctx, func(up *backend.Conn) error { return up.Client.Rename(mailbox, newName, options).Wait() })
}

// Subscribe relays SUBSCRIBE (RFC 9051 section 6.3.7).
func (s *session) Subscribe(mailbox string) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	return s.do(ctx, func(up *backend.Conn) error { return up.Client.Subscribe(mailbox).Wait() })
}

// Unsubscribe relays UNSUBSCRIBE (RFC 9051 section 6.3.8).
func (s *session) Unsubscribe(mailbox string) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	return s.do(ctx, func(up *backend.Conn) error { return up.Client.Unsubscribe(mailbox).Wait() })
}

// List relays LIST and LSUB (RFC 9051 section 6.3.9, RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154
// SPECIAL-USE), one upstream LIST per pattern.
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	return s.do(ctx, func(up *backend.Conn) error {
		for _, p := range patterns {
			cmd := up.Client.List(ref, p, options)
			for d := cmd.Next(); d != nil; d = cmd.Next() {
				if err := w.WriteList(d); err != nil {
					cmd.Close()
					return err
				}
			}
			if err := cmd.Close(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Status relays STATUS (RFC 9051 section 6.3.11). RECENT is not relayed (imapclient cannot parse it).
func (s *session) Status(mailbox string, options *imap.StatusOptions) (data *imap.StatusData, err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	opts := *options
	opts.NumRecent = false
	err = s.do(ctx, func(up *backend.Conn) error {
		data, err = up.Client.Status(mailbox, &opts).Wait()
		return err
	})
	if data != nil && options.NumRecent && data.NumRecent == nil {
		var zero uint32
		data.NumRecent = &zero
	}
	return data, err
}

// Namespace relays NAMESPACE (RFC 2342; RFC 9051 section 6.3.10).
func (s *session) Namespace() (data *imap.NamespaceData, err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	err = s.do(ctx, func(up *backend.Conn) error {
		data, err = up.Client.Namespace().Wait()
		return err
	})
	return data, err
}
