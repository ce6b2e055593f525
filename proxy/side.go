package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/backend"
)

// The relay's own upstream commands (classifying messages, reading ciphertext, copying an original) never go
// over the client's connection, where they could change its sequence numbers or take state updates meant for
// the client. They go over side connections: upstream connections of the same user, logged in by replaying
// what the client sent, with the mailbox opened read-only (EXAMINE). The side connections of one user are
// pooled across that user's client connections.

// maxSideConns bounds the side connections per user and credentials.
const maxSideConns = 2

// sideIdleTimeout closes an unused side connection.
const sideIdleTimeout = 2 * time.Minute

// errNoSuchMessage is returned when a side connection cannot find a message (expunged meanwhile).
var errNoSuchMessage = errors.New("proxy: message not found upstream")

// errStaleMailbox is returned when the side connection sees another UIDVALIDITY than the client's session.
var errStaleMailbox = errors.New("proxy: mailbox UIDVALIDITY changed")

// sidePool is the side connections of one user.
type sidePool struct {
	srv  *Server
	key  string
	auth *authInfo

	mu    sync.Mutex
	idle  []*sideConn
	open  int
	max   int // maxSideConns, or fewer after the server refused one
	refs  int
	avail chan struct{} // a connection was returned
}

type sideConn struct {
	c           *backend.Conn
	mailbox     string
	uidValidity uint32
	lastUse     time.Time
}

// acquireSide returns the side pool of user logged in with auth, shared with the user's other connections.
func (s *Server) acquireSide(user string, auth *authInfo) *sidePool {
	key := user + "\x00" + authFingerprint(auth)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.sides[key]
	if p == nil {
		p = &sidePool{srv: s, key: key, auth: auth, max: maxSideConns, avail: make(chan struct{}, maxSideConns)}
		s.sides[key] = p
	}
	p.mu.Lock()
	p.refs++
	p.mu.Unlock()
	return p
}

// releaseSide drops one reference; the last one closes the pool's connections.
func (s *Server) releaseSide(p *sidePool) {
	s.mu.Lock()
	p.mu.Lock()
	p.refs--
	last := p.refs == 0
	var idle []*sideConn
	if last {
		delete(s.sides, p.key)
		idle, p.idle = p.idle, nil
	}
	p.mu.Unlock()
	s.mu.Unlock()
	for _, sc := range idle {
		sc.c.Close()
	}
}

// do runs f on a side connection with mailbox m open read-only.
func (p *sidePool) do(ctx context.Context, m mailboxRef, f func(c *backend.Conn) error) (err error) {
	ctx, cancel := context.WithTimeout(ctx, p.srv.opts.CommandTimeout)
	defer cancel()
	sc, err := p.get(ctx)
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished {
			err = errSidePanic // the connection may be mid-command: close it
		}
		p.put(sc, err)
	}()
	err = sc.c.Do(ctx, func() error {
		if sc.mailbox != m.name || sc.uidValidity != m.uidValidity {
			sc.mailbox = ""
			data, err := sc.c.Client.Select(m.name, &imap.SelectOptions{ReadOnly: true}).Wait()
			if err != nil {
				return err
			}
			sc.mailbox, sc.uidValidity = m.name, data.UIDValidity
			if data.UIDValidity != m.uidValidity {
				return errStaleMailbox
			}
		}
		return f(sc.c)
	})
	finished = true
	return err
}

var errSidePanic = errors.New("proxy: side connection user panicked")

// get takes an idle connection, dials a new one while fewer than maxSideConns are open, or waits.
func (p *sidePool) get(ctx context.Context) (*sideConn, error) {
	for {
		p.mu.Lock()
		for len(p.idle) > 0 {
			sc := p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
			if isClosed(sc.c) || time.Since(sc.lastUse) > sideIdleTimeout {
				p.open--
				p.mu.Unlock()
				sc.c.Close()
				p.mu.Lock()
				continue
			}
			p.mu.Unlock()
			return sc, nil
		}
		if p.open < p.max {
			p.open++
			p.mu.Unlock()
			c, err := p.dial(ctx)
			if err != nil {
				p.mu.Lock()
				p.open--
				others := p.open
				if others > 0 {
					// The server refuses more connections (e.g. Dovecot's per-user limit): share the ones
					// that exist from now on.
					p.max = others
				}
				p.mu.Unlock()
				p.signal()
				if others > 0 {
					p.srv.log.Info("side connection refused; sharing the open ones", "open", others, "err", err)
					continue
				}
				return nil, err
			}
			return &sideConn{c: c}, nil
		}
		p.mu.Unlock()
		select {
		case <-p.avail:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// put returns a connection after use; one that failed other than by a server's NO or BAD is closed.
func (p *sidePool) put(sc *sideConn, err error) {
	var ie *imap.Error
	broken := err != nil && !errors.As(err, &ie) && !errors.Is(err, errStaleMailbox) && !errors.Is(err, errNoSuchMessage)
	p.mu.Lock()
	if broken || isClosed(sc.c) || p.refs == 0 {
		p.open--
		p.mu.Unlock()
		sc.c.Close()
	} else {
		sc.lastUse = time.Now()
		p.idle = append(p.idle, sc)
		p.mu.Unlock()
	}
	p.signal()
}

func (p *sidePool) signal() {
	select {
	case p.avail <- struct{}{}:
	default:
	}
}

func isClosed(c *backend.Conn) bool {
	select {
	case <-c.Closed():
		return true
	default:
		return false
	}
}

// dial opens and logs in one side connection.
func (p *sidePool) dial(ctx context.Context) (*backend.Conn, error) {
	c, err := backend.Dial(ctx, p.srv.opts.Upstream)
	if err != nil {
		p.srv.opts.Metrics.UpstreamError()
		return nil, err
	}
	a := p.auth
	if a.login {
		err = c.Login(ctx, a.user, a.password)
	} else {
		err = c.Authenticate(ctx, &replayClient{mech: a.mech, responses: a.responses})
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("proxy: side connection login: %w", err)
	}
	return c, nil
}

// replayClient is a SASL client that sends what the mail client sent (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER).
type replayClient struct {
	mech      string
	responses [][]byte
	i         int
}

func (c *replayClient) Start() (string, []byte, error) {
	if c.mech == "LOGIN" || len(c.responses) == 0 {
		return c.mech, nil, nil
	}
	c.i = 1
	return c.mech, c.responses[0], nil
}

func (c *replayClient) Next(challenge []byte) ([]byte, error) {
	if c.i >= len(c.responses) {
		return nil, errors.New("proxy: no more recorded SASL responses")
	}
	c.i++
	return c.responses[c.i-1], nil
}

// authFingerprint tells credentials apart without keeping a second copy of them in a map key.
func authFingerprint(a *authInfo) string {
	h := sha256.New()
	if a.login {
		io.WriteString(h, "login\x00"+a.user+"\x00"+a.password)
	} else {
		io.WriteString(h, a.mech)
		for _, r := range a.responses {
			h.Write([]byte{0})
			h.Write(r)
		}
	}
	return string(h.Sum(nil))
}

// rawRoom is the spare capacity fetchRaw leaves after a large message (rawRoomMin bytes or more): room for the
// status field, so that a Rewriter can serve a message it does not decrypt (too large, or undecryptable) as
// that field and the original inside the fetched buffer instead of a second copy of the message.
const (
	rawRoom    = 4 << 10
	rawRoomMin = 1 << 20
)

// fetchRaw reads the upstream bytes of uid in m over a side connection (BODY.PEEK[]: reading ciphertext does
// not set \Seen), into a buffer of the literal's announced size (plus rawRoom after a large one), allocated
// before the bytes arrive and filled once.
func (r *relay) fetchRaw(ctx context.Context, m mailboxRef, uid uint32) ([]byte, error) {
	var b []byte
	err := r.side.do(ctx, m, func(c *backend.Conn) error {
		fetch := func() error {
			sec := &imap.FetchItemBodySection{Peek: true}
			cmd := c.Client.Fetch(imap.UIDSetNum(imap.UID(uid)), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}})
			for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
				for item := msg.Next(); item != nil; item = msg.Next() {
					bs, ok := item.(imapclient.FetchItemDataBodySection)
					if !ok || bs.Literal == nil || b != nil {
						continue
					}
					size := bs.Literal.Size()
					room := int64(0)
					if size >= rawRoomMin {
						room = rawRoom
					}
					buf := make([]byte, size, size+room)
					if _, err := io.ReadFull(bs.Literal, buf); err != nil {
						cmd.Close()
						return fmt.Errorf("proxy: reading UID %d: %w", uid, err)
					}
					b = buf
				}
			}
			return cmd.Close()
		}
		if err := fetch(); err != nil || b != nil {
			return err
		}
		// Newer than what the side connection has seen: let it catch up once.
		if err := c.Client.Noop().Wait(); err != nil {
			return err
		}
		if err := fetch(); err != nil {
			return err
		}
		if b == nil {
			return errNoSuchMessage
		}
		return nil
	})
	return b, err
}
