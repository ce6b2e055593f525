package main

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// benchUser and benchPassword are the Dovecot account that holds the benchmark mail.
const (
	benchUser     = "bench"
	benchPassword = "bench-pw"
	plainMailbox  = "Plain" // the plain twins; INBOX holds the encrypted messages
	bigMailbox    = "Big"   // the one big encrypted message
)

// session is a logged-in client with a mailbox examined (read-only, so \Seen never changes).
type session struct {
	c    *imapclient.Client
	uids []imap.UID
}

// openSession logs in at addr (Dovecot or a proxy), examines mailbox and lists its UIDs; it wants exactly
// want messages.
func openSession(addr, mailbox string, want int) (*session, error) {
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return nil, fmt.Errorf("smimebench: dial %s: %w", addr, err)
	}
	if err := c.Login(benchUser, benchPassword).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("smimebench: login at %s: %w", addr, err)
	}
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("smimebench: examine %s at %s: %w", mailbox, addr, err)
	}
	if int(sel.NumMessages) != want {
		c.Close()
		return nil, fmt.Errorf("smimebench: %s at %s has %d messages, want %d", mailbox, addr, sel.NumMessages, want)
	}
	msgs, err := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true}).Collect()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("smimebench: listing UIDs of %s: %w", mailbox, err)
	}
	s := &session{c: c}
	for _, m := range msgs {
		s.uids = append(s.uids, m.UID)
	}
	slices.Sort(s.uids)
	return s, nil
}

func (s *session) close() { s.c.Logout().Wait(); s.c.Close() }

// checker verifies one served message (BODY[] bytes) and returns the twin index it was.
type checker func(served []byte) (int, error)

// phaseResult is one timed pass over a mailbox.
type phaseResult struct {
	dur   time.Duration
	msgs  int
	bytes int64 // literal bytes received
}

func (r phaseResult) perMsg() time.Duration {
	if r.msgs == 0 {
		return 0
	}
	return r.dur / time.Duration(r.msgs)
}

// fetchAll runs UID FETCH (UID BODY.PEEK[]) over every UID of s in batches of batch, sequentially, as a client
// syncing a mailbox does, reading each literal into memory and checking it. extra adds items to the FETCH
// (warm-up passes ask for BODYSTRUCTURE too). Every message must be served and pass check once.
func (s *session) fetchAll(batch int, check checker, extra bool) (phaseResult, error) {
	sec := &imap.FetchItemBodySection{Peek: true}
	opts := &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}
	if extra {
		opts.BodyStructure = &imap.FetchItemBodyStructure{Extended: true}
	}
	seen := make(map[int]bool, len(s.uids))
	var res phaseResult
	var firstErr error
	buf := make([]byte, 0, 256<<10)
	start := time.Now()
	for i := 0; i < len(s.uids); i += batch {
		cmd := s.c.Fetch(imap.UIDSetNum(s.uids[i:min(i+batch, len(s.uids))]...), opts)
		for m := cmd.Next(); m != nil; m = cmd.Next() {
			for item := m.Next(); item != nil; item = m.Next() {
				bs, ok := item.(imapclient.FetchItemDataBodySection)
				if !ok || bs.Literal == nil {
					continue
				}
				n := bs.Literal.Size()
				buf = slices.Grow(buf[:0], int(n))[:n]
				if _, err := io.ReadFull(bs.Literal, buf); err != nil {
					firstErr = keepFirst(firstErr, fmt.Errorf("smimebench: reading a literal: %w", err))
					continue
				}
				res.msgs++
				res.bytes += n
				idx, err := check(buf)
				switch {
				case err != nil:
					firstErr = keepFirst(firstErr, err)
				case seen[idx]:
					firstErr = keepFirst(firstErr, fmt.Errorf("smimebench: message %d served twice", idx))
				}
				seen[idx] = true
			}
		}
		if err := cmd.Close(); err != nil {
			return res, fmt.Errorf("smimebench: UID FETCH: %w", err)
		}
	}
	res.dur = time.Since(start)
	if firstErr != nil {
		return res, firstErr
	}
	if res.msgs != len(s.uids) {
		return res, fmt.Errorf("smimebench: %d messages served, want %d", res.msgs, len(s.uids))
	}
	return res, nil
}

func keepFirst(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// indexOf finds the twin index in a served message's Message-ID.
func indexOf(served []byte) (int, error) {
	if !mimepart.HeaderComplete(served) {
		return 0, fmt.Errorf("smimebench: served message has no header/body separator")
	}
	const pfx = "<bench-"
	id := mimepart.Get(served, "Message-ID")
	if !strings.HasPrefix(id, pfx) {
		return 0, fmt.Errorf("smimebench: served message has no benchmark Message-ID")
	}
	rest := id[len(pfx):]
	j := strings.IndexByte(rest, '@')
	if j < 0 {
		return 0, fmt.Errorf("smimebench: malformed Message-ID")
	}
	return strconv.Atoi(rest[:j])
}

var decryptedPrefix = []byte(decrypt.StatusField + ": decrypted;")

// plainChecker wants each plain twin byte for byte (CRLF).
func plainChecker(twins []twin) checker {
	return func(served []byte) (int, error) {
		i, err := indexOf(served)
		if err != nil || i < 0 || i >= len(twins) {
			return i, fmt.Errorf("smimebench: plain message: index %d: %v", i, err)
		}
		if !bytes.Equal(served, twins[i].plain) {
			return i, fmt.Errorf("smimebench: plain message %d differs from what was seeded", i)
		}
		return i, nil
	}
}

// rawChecker wants each encrypted message as seeded (direct from Dovecot).
func rawChecker(twins []twin) checker {
	return func(served []byte) (int, error) {
		i, err := indexOf(served)
		if err != nil || i < 0 || i >= len(twins) {
			return i, fmt.Errorf("smimebench: encrypted message: index %d: %v", i, err)
		}
		if !bytes.Equal(served, twins[i].enc) {
			return i, fmt.Errorf("smimebench: encrypted message %d differs from what was seeded", i)
		}
		return i, nil
	}
}

// decryptedChecker wants each encrypted message served decrypted (status field first) with its plain twin's
// body.
func decryptedChecker(twins []twin) checker {
	return func(served []byte) (int, error) {
		i, err := indexOf(served)
		if err != nil || i < 0 || i >= len(twins) {
			return i, fmt.Errorf("smimebench: decrypted message: index %d: %v", i, err)
		}
		if !bytes.HasPrefix(served, decryptedPrefix) {
			line, _, _ := bytes.Cut(served, []byte("\r\n"))
			return i, fmt.Errorf("smimebench: message %d not served decrypted: %.200q", i, line)
		}
		_, body := mimepart.Split(served)
		if !bytes.Equal(body, twins[i].body) {
			return i, fmt.Errorf("smimebench: decrypted message %d: body (%d bytes) differs from its plain twin's (%d bytes)", i, len(body), len(twins[i].body))
		}
		return i, nil
	}
}
