package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/smimeproxy/smimeproxy/backend"
)

// Defaults for Options.
const (
	// DefaultCommandTimeout bounds one upstream command (a 50 MB FETCH over a slow link must fit).
	DefaultCommandTimeout = 10 * time.Minute
	// DefaultShutdownTimeout bounds how long Close waits for running commands before cutting connections.
	DefaultShutdownTimeout = 30 * time.Second
)

// Options configure a Server. Upstream.URL is required; every other zero value is usable.
type Options struct {
	// Upstream says how to reach the user's IMAP server; each client connection gets its own upstream
	// connection, opened at login with the client's credentials.
	Upstream backend.Options
	// Logger receives connection-level events (never credentials or message content); nil discards.
	Logger *slog.Logger
	// Rewriter, if set, decides which messages are served rewritten (see Rewriter); nil relays everything.
	Rewriter Rewriter
	// CommandTimeout bounds each upstream command; 0 means DefaultCommandTimeout.
	CommandTimeout time.Duration
	// ShutdownTimeout bounds Close; 0 means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// EncryptAppends makes APPEND encrypt every message to the user's own certificates before it goes
	// upstream (see Session.Append); it needs a Rewriter implementing AppendGuard.
	EncryptAppends bool
	// Metrics, if set, counts sessions, logins and upstream failures.
	Metrics Metrics
}

// Metrics receives the proxy's counters (observe.Metrics implements it). Methods must be safe for concurrent
// use.
type Metrics interface {
	SessionStarted()
	SessionEnded()
	Login(ok bool)
	UpstreamError()
}

// nopMetrics counts nothing.
type nopMetrics struct{}

func (nopMetrics) SessionStarted() {}
func (nopMetrics) SessionEnded()   {}
func (nopMetrics) Login(bool)      {}
func (nopMetrics) UpstreamError()  {}

// Server accepts IMAP clients and relays each to its own upstream connection.
type Server struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	closed    bool
	conns     sync.WaitGroup
	nextID    uint64
}

// New returns a Server. It fails when the upstream URL is invalid.
func New(opts Options) (*Server, error) {
	if _, err := backend.ParseURL(opts.Upstream.URL); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if opts.CommandTimeout == 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if _, ok := opts.Rewriter.(AppendGuard); opts.EncryptAppends && !ok {
		return nil, errors.New("proxy: EncryptAppends needs a Rewriter that implements AppendGuard")
	}
	if opts.Metrics == nil {
		opts.Metrics = nopMetrics{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: log, listeners: map[net.Listener]struct{}{}, sessions: map[*session]struct{}{}}, nil
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Serve accepts connections on ln until Close (then it returns ErrServerClosed) or an accept error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.nextID++
		id := s.nextID
		s.conns.Add(1)
		s.mu.Unlock()
		go s.handle(c, id)
	}
}

// handle serves one client connection with its own imapserver.Server, so that the capabilities advertised after
// login can be the intersection with that user's upstream capabilities.
func (s *Server) handle(c net.Conn, id uint64) {
	defer s.conns.Done()
	cc := newCorkConn(c)
	caps := imap.CapSet{imap.CapIMAP4rev1: {}}
	one := &oneListener{conn: cc, done: make(chan struct{})}
	log := s.log.With("conn", id, "remote", c.RemoteAddr().String())
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(conn *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			sess := newSession(s, conn, cc, caps, log, one.done)
			return sess, nil, nil
		},
		Caps:         caps,
		Logger:       serverLogger{log},
		InsecureAuth: true, // loopback listener; client-facing TLS is added by the caller's listener
	})
	log.Debug("client connected")
	s.opts.Metrics.SessionStarted()
	_ = srv.Serve(one)
	<-one.done
	s.opts.Metrics.SessionEnded()
	log.Debug("client disconnected")
}

func (s *Server) addSession(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sessions[sess] = struct{}{}
	return true
}

func (s *Server) removeSession(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
}

// Close stops accepting, lets running commands finish (bounded by Options.ShutdownTimeout), then says BYE to
// every client and closes its upstream connection. It returns when all connections are gone.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.conns.Wait()
		return nil
	}
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, sess := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess.shutdown(ctx)
		}()
	}
	wg.Wait()
	s.conns.Wait()
	return nil
}

// oneListener hands one connection to imapserver.Server.Serve, then blocks Accept until the session ends.
type oneListener struct {
	conn   net.Conn
	once   sync.Once
	done   chan struct{}
	handed bool
}

func (l *oneListener) Accept() (net.Conn, error) {
	if !l.handed {
		l.handed = true
		return l.conn, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneListener) Close() error   { return nil }
func (l *oneListener) Addr() net.Addr { return l.conn.LocalAddr() }

// serverLogger adapts slog to imapserver.Logger (go-imap logs internal errors and recovered panics there).
type serverLogger struct{ log *slog.Logger }

// A client that hangs up between commands is routine, not an error.
func (l serverLogger) Printf(format string, args ...any) {
	msg := "imapserver: " + fmt.Sprintf(format, args...)
	if strings.Contains(msg, "failed to read command") {
		l.log.Debug(msg)
		return
	}
	l.log.Error(msg)
}
