package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/smimeproxy/smimeproxy/backend"
)

// proxyCaps are the capabilities the proxy can relay; after login each is advertised only when the upstream
// advertises it too (RFC 9051 section 6.1.1).
var proxyCaps = []imap.Cap{
	imap.CapNamespace, imap.CapUIDPlus, imap.CapESearch, imap.CapListExtended, imap.CapListStatus,
	imap.CapMove, imap.CapStatusSize, imap.CapBinary, imap.CapChildren, imap.CapSpecialUse,
	imap.CapLiteralPlus,
}

// errUpstreamLost is returned by commands after the upstream connection broke.
var errUpstreamLost = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Upstream server connection lost"}

// errInternal is what a recovered panic becomes.
var errInternal = errors.New("proxy: internal error")

// session is one client connection and, after login, its upstream connection. imapserver calls its methods
// from the connection's goroutine, one command at a time, except Idle, which runs beside the reader.
type session struct {
	srv   *Server
	conn  *imapserver.Conn
	cork  *corkConn
	caps  imap.CapSet
	log   *slog.Logger
	ended chan struct{} // closed by Close

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	cmdMu sync.Mutex // held while a command runs (Close waits for it)
	upMu  sync.Mutex // one upstream command at a time while a FETCH rewrites in parallel (parallel.go)

	up          *backend.Conn
	user        string
	mailbox     string
	uidValidity uint32
	forged      forgedIndex // forged.go
	readOnly    bool
	closing     bool                            // CLOSE in progress: Unselect sends CLOSE upstream
	ranCmd      bool                            // a session method ran since the last Poll
	openMsg     *imapserver.FetchResponseWriter // open FETCH response, closed on panic

	stopping  chan struct{} // closed when the server shuts down
	stopOnce  sync.Once
	byeOnce   sync.Once
	closeOnce sync.Once
	watchDone chan struct{}
}

func newSession(s *Server, conn *imapserver.Conn, cc *corkConn, caps imap.CapSet, log *slog.Logger, ended chan struct{}) *session {
	ctx, cancel := context.WithCancel(context.Background())
	sess := &session{srv: s, conn: conn, cork: cc, caps: caps, log: log, ended: ended, ctx: ctx, cancel: cancel,
		stopping: make(chan struct{})}
	if !s.addSession(sess) {
		// Server closing: refuse politely once the greeting is out.
		go sess.bye("Server shutting down")
	}
	return sess
}

var (
	_ imapserver.Session          = (*session)(nil)
	_ imapserver.SessionSASL      = (*session)(nil)
	_ imapserver.SessionNamespace = (*session)(nil)
	_ imapserver.SessionMove      = (*session)(nil)
)

// begin starts a command: it takes cmdMu and returns the command's context; end releases both. Every session
// method calls defer s.end(s.begin(&err)) so that a panic is logged and becomes BYE (never reaching the client
// as a crash) and no two commands overlap Close.
func (s *session) begin() (context.Context, context.CancelFunc) {
	s.cmdMu.Lock()
	s.ranCmd = true
	return context.WithTimeout(s.ctx, s.srv.opts.CommandTimeout)
}

func (s *session) end(errp *error, cancel context.CancelFunc) {
	if v := recover(); v != nil {
		s.log.Error("panic in session", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		if s.openMsg != nil {
			_ = s.openMsg.Close()
			s.openMsg = nil
		}
		// BYE before cancel: cancelling may close the upstream connection of an interrupted command, and the
		// watcher must not get to say "connection lost" first.
		s.bye("Internal error")
		cancel()
		s.cmdMu.Unlock()
		*errp = errInternal
		return
	}
	cancel()
	if *errp != nil && s.up != nil && isClosed(s.up) {
		*errp = errUpstreamLost
	}
	s.cmdMu.Unlock()
}

func isClosed(c *backend.Conn) bool {
	select {
	case <-c.Closed():
		return true
	default:
		return false
	}
}

// bye sends BYE and closes the client connection (once).
func (s *session) bye(text string) {
	s.byeOnce.Do(func() {
		if err := s.conn.Bye(text); err != nil {
			s.log.Debug("bye", "err", err)
		}
	})
}

// Close is called by imapserver when the client connection ends.
func (s *session) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.cmdMu.Lock()
		up := s.up
		s.up = nil
		s.cmdMu.Unlock()
		if up != nil {
			up.Close()
		}
		if s.watchDone != nil {
			<-s.watchDone
		}
		s.srv.removeSession(s)
		close(s.ended)
	})
	return nil
}

// shutdown waits for the running command (bounded by ctx), then says BYE.
func (s *session) shutdown(ctx context.Context) {
	s.stopOnce.Do(func() { close(s.stopping) })
	got := make(chan struct{})
	go func() {
		s.cmdMu.Lock()
		close(got)
	}()
	select {
	case <-got:
		s.bye("Server shutting down")
		s.cmdMu.Unlock()
	case <-ctx.Done():
		s.bye("Server shutting down")
		go func() { <-got; s.cmdMu.Unlock() }()
	}
	<-s.ended
}

// watch says BYE to the client when the upstream connection goes away (RFC 9051 section 7.1.5).
func (s *session) watch(up *backend.Conn) {
	defer close(s.watchDone)
	select {
	case <-up.Closed():
		if s.ctx.Err() == nil {
			s.log.Warn("upstream connection lost", "user", s.user)
			s.srv.opts.Metrics.UpstreamError()
			s.bye("Upstream server connection lost")
		}
	case <-s.ctx.Done():
	}
}

// Login relays LOGIN (RFC 9051 section 6.2.3) with the client's credentials to a new upstream connection.
func (s *session) Login(username, password string) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	return s.login(ctx, username, func(up *backend.Conn) error { return up.Login(ctx, username, password) })
}

// AuthenticateMechanisms implements imapserver.SessionSASL: only PLAIN is relayed.
func (s *session) AuthenticateMechanisms() []string { return []string{sasl.Plain} }

// Authenticate relays AUTHENTICATE PLAIN (RFC 4616) upstream.
func (s *session) Authenticate(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Unsupported authentication mechanism"}
	}
	return sasl.NewPlainServer(func(identity, username, password string) (err error) {
		ctx, cancel := s.begin()
		defer s.end(&err, cancel)
		return s.login(ctx, username, func(up *backend.Conn) error { return up.AuthenticatePlain(ctx, identity, username, password) })
	}), nil
}

func (s *session) login(ctx context.Context, user string, auth func(*backend.Conn) error) error {
	if s.up != nil {
		return &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Already logged in"}
	}
	up, err := backend.Dial(ctx, s.srv.opts.Upstream)
	if err != nil {
		s.log.Warn("upstream dial failed", "err", err)
		s.srv.opts.Metrics.UpstreamError()
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Upstream server unavailable"}
	}
	if err := auth(up); err != nil {
		up.Close()
		var ie *imap.Error
		if errors.As(err, &ie) {
			s.log.Info("login refused upstream", "user", user)
			s.srv.opts.Metrics.Login(false)
			return ie
		}
		s.log.Warn("upstream login failed", "user", user, "err", err)
		s.srv.opts.Metrics.UpstreamError()
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Upstream server unavailable"}
	}
	upCaps := up.Client.Caps()
	for _, c := range proxyCaps {
		if upCaps.Has(c) {
			s.caps[c] = struct{}{}
		}
	}
	s.up, s.user = up, user
	s.log = s.log.With("user", user)
	s.watchDone = make(chan struct{})
	go s.watch(up)
	s.log.Info("logged in")
	s.srv.opts.Metrics.Login(true)
	return nil
}

// upstream returns the upstream connection, or errUpstreamLost.
func (s *session) upstream() (*backend.Conn, error) {
	if s.up == nil || isClosed(s.up) {
		return nil, errUpstreamLost
	}
	return s.up, nil
}

// do runs f on the upstream connection bounded by ctx.
func (s *session) do(ctx context.Context, f func(up *backend.Conn) error) error {
	up, err := s.upstream()
	if err != nil {
		return err
	}
	return up.Do(ctx, func() error { return f(up) })
}

// Poll relays queued upstream updates (RFC 9051 section 5.2). allowExpunge is false after FETCH, STORE and
// SEARCH (section 7.5.1).
//
// A command that reached no other session method (NOOP, CHECK, CAPABILITY) is relayed as an upstream NOOP
// first, so that a client polling with NOOP sees new mail (RFC 9051 section 6.1.2).
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) (err error) {
	s.cmdMu.Lock()
	ran := s.ranCmd
	s.ranCmd = false
	s.cmdMu.Unlock()
	if s.up == nil {
		return nil
	}
	if !ran {
		ctx, cancel := s.begin()
		err = s.do(ctx, func(up *backend.Conn) error { return up.Client.Noop().Wait() })
		s.ranCmd = false
		s.end(&err, cancel)
		if err != nil {
			return err
		}
	}
	return s.writeUpdates(w, s.up.TakeUpdates(allowExpunge))
}

func (s *session) writeUpdates(w *imapserver.UpdateWriter, ups []backend.Update) error {
	if s.mailbox == "" {
		return nil
	}
	for _, u := range ups {
		var err error
		switch u.Kind {
		case backend.UpdateExists:
			err = w.WriteNumMessages(u.Num)
		case backend.UpdateExpunge:
			err = w.WriteExpunge(u.Num)
		case backend.UpdateFlags:
			err = w.WriteMessageFlags(u.Num, u.UID, u.Flags)
		case backend.UpdateMailboxFlags:
			err = w.WriteMailboxFlags(u.Flags)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Idle relays IDLE (RFC 2177; RFC 9051 section 6.3.13): the upstream connection idles while the client does,
// and updates are written as they arrive.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) (err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	up, err := s.upstream()
	if err != nil {
		return err
	}
	if err := s.writeUpdates(w, up.TakeUpdates(true)); err != nil {
		return err
	}
	idle, err := up.Client.Idle()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := up.Do(ctx, idle.Close); err == nil && cerr != nil && !isClosed(up) {
			err = cerr
		}
	}()
	for {
		select {
		case <-stop:
			return nil
		case <-s.ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		case <-up.Closed():
			return errUpstreamLost
		case <-up.Notify():
			if err := s.writeUpdates(w, up.TakeUpdates(true)); err != nil {
				return err
			}
		}
	}
}
