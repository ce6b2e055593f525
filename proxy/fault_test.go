package proxy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// panicRewriter panics in Candidate, to check the per-session panic recovery.
type panicRewriter struct{}

func (panicRewriter) Candidate(imap.BodyStructure) bool { panic("test panic in Candidate") }
func (panicRewriter) Rewrite(context.Context, proxy.MessageRef, func() ([]byte, error)) ([]byte, error) {
	panic("unreachable")
}

// TestPanicBecomesBye: a panic while serving FETCH is logged and the client gets BYE; other clients and
// commands without the panicking path keep working.
func TestPanicBecomesBye(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	seed(t, d, "alice")
	addr, _ := startProxy(t, d, panicRewriter{})
	r := rawDial(t, addr)
	r.cmd(t, "a LOGIN alice alice-pw", "a OK")
	r.cmd(t, "b SELECT INBOX", "b OK")
	r.cmd(t, "c FETCH 1 (FLAGS)", "c OK") // not body-dependent: no Rewriter call
	out := r.cmd(t, "d FETCH 1 (RFC822.SIZE)", "* BYE")
	if !strings.Contains(out, "* BYE Internal error") {
		t.Errorf("after a panic got %q, want * BYE Internal error", out)
	}
	// The server is still up for others.
	r2 := rawDial(t, addr)
	r2.cmd(t, "a LOGIN alice alice-pw", "a OK")
	r2.cmd(t, "b LOGOUT", "b OK")
}

// TestCloseSaysBye: Server.Close lets the idle client go with BYE and returns.
func TestCloseSaysBye(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	addr, srv := startProxy(t, d, nil)
	r := rawDial(t, addr)
	r.cmd(t, "a LOGIN alice alice-pw", "a OK")
	r.cmd(t, "b SELECT INBOX", "b OK")
	r.cmd(t, "c IDLE", "+ ")
	done := make(chan struct{})
	go func() { srv.Close(); close(done) }()
	out := r.readUntil(t, "* BYE")
	if !strings.Contains(out, "shutting down") {
		t.Errorf("got %q", out)
	}
	<-done
}
