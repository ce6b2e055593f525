package backend_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in       string
		addr     string
		implicit bool
		err      string
	}{
		{"imaps://mail.example.org", "mail.example.org:993", true, ""},
		{"imap://mail.example.org", "mail.example.org:143", false, ""},
		{"IMAPS://127.0.0.1:1993/", "127.0.0.1:1993", true, ""},
		{"imap://[::1]:143", "[::1]:143", false, ""},
		{"pop3://x", "", false, "scheme must be imaps or imap"},
		{"imaps://user:pw@x", "", false, "want imaps://host"},
		{"imaps://x/INBOX", "", false, "want imaps://host"},
		{"mail.example.org:993", "", false, "scheme"},
	}
	for _, tt := range tests {
		got, err := backend.ParseURL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseURL(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got.Addr != tt.addr || got.Implicit != tt.implicit {
			t.Errorf("ParseURL(%q) = %+v, %v; want %s implicit=%v", tt.in, got, err, tt.addr, tt.implicit)
		}
	}
	for host, want := range map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true, "127.1.2.3": true, "192.0.2.1": false, "mail.example.org": false} {
		if backend.IsLoopback(host) != want {
			t.Errorf("IsLoopback(%q) = %v", host, !want)
		}
	}
}

// TestDialDovecot: implicit TLS and STARTTLS with the test CA, loopback plaintext, and a TLS failure without
// the CA, against a real Dovecot.
func TestDialDovecot(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	plain := testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true})
	ctx := context.Background()
	for _, o := range []backend.Options{
		{URL: "imaps://" + d.TLSAddr(), CAFile: d.CAFile()},
		{URL: "imap://" + d.Addr(), CAFile: d.CAFile()},
		{URL: "imap://" + plain.Addr()},
	} {
		c, err := backend.Dial(ctx, o)
		if err != nil {
			t.Errorf("Dial(%s): %v", o.URL, err)
			continue
		}
		if err := c.Login(ctx, "alice", "alice-pw"); err != nil {
			t.Errorf("%s: login: %v", o.URL, err)
		}
		if err := c.Logout(ctx); err != nil {
			t.Errorf("%s: logout: %v", o.URL, err)
		}
	}
	// STARTTLS is used when offered: without the CA the handshake fails instead of falling back to plaintext.
	if _, err := backend.Dial(ctx, backend.Options{URL: "imap://" + d.Addr()}); err == nil || !strings.Contains(err.Error(), "STARTTLS handshake") {
		t.Errorf("Dial without CA = %v, want a STARTTLS handshake error", err)
	}
	if _, err := backend.Dial(ctx, backend.Options{URL: "imaps://" + d.TLSAddr()}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Dial imaps without CA = %v, want a certificate error", err)
	}
	// A wrong password is the server's NO, as an *imap.Error.
	c, err := backend.Dial(ctx, backend.Options{URL: "imap://" + plain.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var ie *imap.Error
	if err := c.AuthenticatePlain(ctx, "", "alice", "nope"); !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo {
		t.Errorf("AUTHENTICATE PLAIN with a wrong password = %v, want NO", err)
	}
	if err := c.AuthenticatePlain(ctx, "", "alice", "alice-pw"); err != nil {
		t.Errorf("AUTHENTICATE PLAIN: %v", err)
	}
	// A context that ends cuts the command.
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	time.Sleep(2 * time.Millisecond)
	if err := c.Do(short, func() error { return c.Client.Noop().Wait() }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do with an expired context = %v", err)
	}
}
