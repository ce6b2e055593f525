package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// UpdateKind says what an Update reports.
type UpdateKind int

const (
	// UpdateExists: the mailbox now has Num messages (RFC 9051 section 7.4.1).
	UpdateExists UpdateKind = iota
	// UpdateExpunge: message sequence number Num was expunged (RFC 9051 section 7.5.1).
	UpdateExpunge
	// UpdateFlags: message Num (UID, when the server sent it) now has Flags (RFC 9051 section 7.5.2).
	UpdateFlags
	// UpdateMailboxFlags: the mailbox's defined flags are now Flags (RFC 9051 section 7.3.5).
	UpdateMailboxFlags
)

// Update is one unilateral upstream response for the selected mailbox.
type Update struct {
	Kind  UpdateKind
	Num   uint32
	UID   imap.UID
	Flags []imap.Flag
}

// Conn is one upstream IMAP connection, owned by one proxy session. Commands are sent through Client; Do bounds
// them by a context. Unilateral responses are queued and taken with TakeUpdates.
type Conn struct {
	// Client is the go-imap client. Commands must be sent by one goroutine at a time (the owning session).
	Client *imapclient.Client
	nc     net.Conn

	mu      sync.Mutex
	updates []Update
	notify  chan struct{}
	pending sync.WaitGroup // unilateral FETCH collectors
}

// Dial connects to the upstream server described by o and waits for its greeting. ctx bounds the whole dial.
// It fails with a "backend:"-prefixed error naming the step (connect, TLS, greeting, STARTTLS), or with
// ErrPlaintextRefused.
func Dial(ctx context.Context, o Options) (*Conn, error) {
	c := &Conn{notify: make(chan struct{}, 1)}
	co := &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Expunge: func(seq uint32) { c.push(Update{Kind: UpdateExpunge, Num: seq}) },
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					c.push(Update{Kind: UpdateExists, Num: *d.NumMessages})
				}
				if d.Flags != nil {
					c.push(Update{Kind: UpdateMailboxFlags, Flags: d.Flags})
				}
			},
			Fetch: c.unilateralFetch,
		},
	}
	cl, nc, err := dialClient(ctx, &o, co)
	if err != nil {
		return nil, err
	}
	c.Client, c.nc = cl, nc
	return c, nil
}

// unilateralFetch runs in its own goroutine (imapclient's choice): it collects FLAGS and UID.
func (c *Conn) unilateralFetch(msg *imapclient.FetchMessageData) {
	c.pending.Add(1)
	defer c.pending.Done()
	u := Update{Kind: UpdateFlags, Num: msg.SeqNum}
	has := false
	for {
		item := msg.Next()
		if item == nil {
			break
		}
		switch item := item.(type) {
		case imapclient.FetchItemDataFlags:
			u.Flags, has = item.Flags, true
		case imapclient.FetchItemDataUID:
			u.UID = item.UID
		}
	}
	if has {
		c.push(u)
	}
}

func (c *Conn) push(u Update) {
	c.mu.Lock()
	c.updates = append(c.updates, u)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Notify receives a value after updates were queued.
func (c *Conn) Notify() <-chan struct{} { return c.notify }

// TakeUpdates removes and returns the queued updates. With allowExpunge false it stops before the first
// expunge (RFC 9051 section 7.5.1: no EXPUNGE during FETCH, STORE or SEARCH), leaving the rest queued.
func (c *Conn) TakeUpdates(allowExpunge bool) []Update {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.updates)
	if !allowExpunge {
		for i, u := range c.updates {
			if u.Kind == UpdateExpunge {
				n = i
				break
			}
		}
	}
	if n == 0 {
		return nil
	}
	out := append([]Update(nil), c.updates[:n]...)
	c.updates = append(c.updates[:0], c.updates[n:]...)
	return out
}

// DropUpdates forgets queued updates (after SELECT, EXAMINE, UNSELECT or CLOSE).
func (c *Conn) DropUpdates() {
	c.mu.Lock()
	c.updates = nil
	c.mu.Unlock()
}

// Do runs f, closing the connection if ctx ends first (imapclient has no context support), and returns f's
// error, or ctx's error when ctx ended.
func (c *Conn) Do(ctx context.Context, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	err := f()
	if !stop() {
		if err == nil {
			err = ctx.Err()
		}
		return fmt.Errorf("backend: %w", ctx.Err())
	}
	return err
}

// Closed is closed when the upstream connection is gone.
func (c *Conn) Closed() <-chan struct{} { return c.Client.Closed() }

// Close closes the connection without LOGOUT and waits for the unilateral FETCH collectors.
func (c *Conn) Close() error {
	err := c.Client.Close()
	c.pending.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Logout sends LOGOUT (bounded by ctx) and closes the connection.
func (c *Conn) Logout(ctx context.Context) error {
	err := c.Do(ctx, func() error { return c.Client.Logout().Wait() })
	c.Close()
	return err
}

// PutBack returns updates taken with TakeUpdates to the front of the queue, in order.
func (c *Conn) PutBack(ups []Update) {
	if len(ups) == 0 {
		return
	}
	c.mu.Lock()
	c.updates = append(append([]Update(nil), ups...), c.updates...)
	c.mu.Unlock()
}

// Probe checks that the upstream server described by o can be reached: it dials (TCP, TLS or STARTTLS, greeting,
// as Dial) and logs out. It is the readiness check of `serve`'s /healthz and fails as Dial does.
func Probe(ctx context.Context, o Options) error {
	c, err := Dial(ctx, o)
	if err != nil {
		return err
	}
	return c.Logout(ctx)
}
