package backend

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/emersion/go-imap/v2/imapclient"
)

// Conn is one upstream IMAP connection driven by go-imap's client: the proxy's side connections (classifying
// messages, reading ciphertext), /healthz and doctor. Commands are sent through Client; Do bounds them by a
// context. The relay's connection to the server for the client is a Stream (DialStream).
type Conn struct {
	// Client is the go-imap client. Commands must be sent by one goroutine at a time.
	Client *imapclient.Client
	nc     net.Conn
}

// Dial connects to the upstream server described by o and waits for its greeting. ctx bounds the whole dial.
// It fails with a "backend:"-prefixed error naming the step (connect, TLS, greeting, STARTTLS), or with
// ErrPlaintextRefused.
func Dial(ctx context.Context, o Options) (*Conn, error) {
	cl, nc, err := dialClient(ctx, &o, &imapclient.Options{})
	if err != nil {
		return nil, err
	}
	return &Conn{Client: cl, nc: nc}, nil
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
		// ctx ended while f ran and closed the connection: whatever f returned is a consequence of that.
		return fmt.Errorf("backend: %w", ctx.Err())
	}
	return err
}

// Closed is closed when the upstream connection is gone.
func (c *Conn) Closed() <-chan struct{} { return c.Client.Closed() }

// Close closes the connection without LOGOUT.
func (c *Conn) Close() error {
	err := c.Client.Close()
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

// Probe checks that the upstream server described by o can be reached: it dials (TCP, TLS or STARTTLS, greeting,
// as Dial) and logs out. It is the readiness check of `serve`'s /healthz and fails as Dial does.
func Probe(ctx context.Context, o Options) error {
	c, err := Dial(ctx, o)
	if err != nil {
		return err
	}
	return c.Logout(ctx)
}
