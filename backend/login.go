package backend

import (
	"context"

	"github.com/emersion/go-sasl"
)

// Login logs in with LOGIN (RFC 9051 section 6.2.3). An upstream NO comes back as the *imap.Error the server
// sent (so the proxy can relay it), other failures as errors.
func (c *Conn) Login(ctx context.Context, user, password string) error {
	return c.Do(ctx, func() error { return c.Client.Login(user, password).Wait() })
}

// AuthenticatePlain logs in with AUTHENTICATE PLAIN (RFC 4616; RFC 9051 section 6.2.2) using the client's
// authorization identity (may be empty), user name and password.
func (c *Conn) AuthenticatePlain(ctx context.Context, identity, user, password string) error {
	return c.Do(ctx, func() error { return c.Client.Authenticate(sasl.NewPlainClient(identity, user, password)) })
}
