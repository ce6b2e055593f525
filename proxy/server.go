package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/smimeproxy/smimeproxy/backend"
)

// Defaults for Options.
const (
	// DefaultCommandTimeout bounds one upstream command (a 50 MB FETCH over a slow link must fit).
	DefaultCommandTimeout = 10 * time.Minute
	// DefaultShutdownTimeout bounds how long Close waits for running commands before cutting connections.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultMaxPreAuth bounds connections that have not logged in (one user's clients need a handful).
	DefaultMaxPreAuth = 64
	// DefaultPreAuthTimeout ends connections that do not log in.
	DefaultPreAuthTimeout = 2 * time.Minute
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
	// The Rewriter's helpers (hooks.go), each optional: nil turns its feature off. Package decrypt's
	// Decrypter implements them all.
	//
	// CandidateFilter narrows the messages whose BODYSTRUCTURE is fetched to classify them; nil: all.
	CandidateFilter CandidateFilter
	// CacheProbe lets a UID FETCH of cached encrypted messages go upstream without their body items.
	CacheProbe CacheProbe
	// HeaderGuard names the status fields: messages stored with one are rewritten, SEARCH HEADER on them is
	// answered from served copies.
	HeaderGuard HeaderGuard
	// AppendGuard keeps served plaintext from going upstream on APPEND; nil relays APPEND unchanged.
	AppendGuard AppendGuard
	// TextMatcher evaluates SEARCH BODY and TEXT over served copies; nil leaves them to the server.
	TextMatcher TextMatcher
	// HeaderMatcher answers SEARCH FROM, TO, CC, BCC, SUBJECT and HEADER from served headers; nil leaves them to
	// the server.
	HeaderMatcher HeaderMatcher
	// DerivedCache keeps what the relay derives from a served copy next to the Rewriter's cached bytes.
	DerivedCache DerivedCache
	// MetaSource answers metadata-only FETCH items from stored metadata, MetaPruner drops that of expunged
	// messages.
	MetaSource MetaSource
	MetaPruner MetaPruner
	// IndexStore keeps the relay's classification of each mailbox across restarts; nil classifies afresh in
	// every process.
	IndexStore IndexStore
	// StoredText answers SEARCH BODY and TEXT from stored text without decrypting; nil asks TextMatcher.
	StoredText StoredTextMatcher
	// CommandTimeout bounds each upstream command; 0 means DefaultCommandTimeout.
	CommandTimeout time.Duration
	// ShutdownTimeout bounds Close; 0 means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// EncryptAppends makes APPEND encrypt every message to the user's own certificates before it goes
	// upstream (see Session.Append); it needs AppendGuard.
	EncryptAppends bool
	// Metrics, if set, counts sessions, logins and upstream failures.
	Metrics Metrics
	// MaxPreAuth bounds the connections that have not logged in yet; further connections are refused with
	// BYE. 0 means DefaultMaxPreAuth.
	MaxPreAuth int
	// PreAuthTimeout ends a connection that has not logged in after this long; 0 means DefaultPreAuthTimeout.
	PreAuthTimeout time.Duration
	// StartTLS, if set, is offered to clients on plaintext connections before login: the relay answers
	// STARTTLS itself and upgrades the client connection with this configuration (RFC 9051 section 6.2.1;
	// see starttls.go). nil: STARTTLS is refused, as when the connection is already TLS.
	StartTLS *tls.Config
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

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	relays     map[*relay]struct{}
	sides      map[string]*sidePool
	indexes    map[indexKey]*mailboxIndex
	indexClock uint64
	closed     bool
	preAuth    int // connections not logged in yet
	conns      sync.WaitGroup
	nextID     uint64

	// rewriteSem bounds the messages rewritten at once (decryption is CPU-bound).
	rewriteSem chan struct{}
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
	if opts.EncryptAppends && opts.AppendGuard == nil {
		return nil, errors.New("proxy: EncryptAppends needs an AppendGuard")
	}
	if opts.Metrics == nil {
		opts.Metrics = nopMetrics{}
	}
	if opts.MaxPreAuth == 0 {
		opts.MaxPreAuth = DefaultMaxPreAuth
	}
	if opts.PreAuthTimeout == 0 {
		opts.PreAuthTimeout = DefaultPreAuthTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: log, listeners: map[net.Listener]struct{}{}, relays: map[*relay]struct{}{},
		sides: map[string]*sidePool{}, indexes: map[indexKey]*mailboxIndex{},
		rewriteSem: make(chan struct{}, 2*runtime.GOMAXPROCS(0))}, nil
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

// handle relays one client connection: it connects upstream, relays the greeting, then the whole session.
func (s *Server) handle(c net.Conn, id uint64) {
	defer s.conns.Done()
	log := s.log.With("conn", id, "remote", c.RemoteAddr().String())
	s.opts.Metrics.SessionStarted()
	defer s.opts.Metrics.SessionEnded()
	log.Debug("client connected")
	s.mu.Lock()
	full := s.preAuth >= s.opts.MaxPreAuth
	if !full {
		s.preAuth++
	}
	s.mu.Unlock()
	if full {
		log.Warn("too many connections that have not logged in; refusing one", "max", s.opts.MaxPreAuth)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "* BYE [UNAVAILABLE] Too many connections waiting to log in\r\n")
		c.Close()
		return
	}
	authed := false
	defer func() {
		if !authed {
			s.loggedIn()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommandTimeout)
	up, err := backend.DialStream(ctx, s.opts.Upstream)
	cancel()
	if err != nil {
		log.Warn("upstream dial failed", "err", err)
		s.opts.Metrics.UpstreamError()
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "* BYE [UNAVAILABLE] Upstream server unavailable\r\n")
		c.Close()
		return
	}
	r := newRelay(s, c, up, log)
	r.onLogin = func() { authed = true; s.loggedIn() }
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		io.WriteString(c, "* BYE Server shutting down\r\n")
		c.Close()
		up.Conn.Close()
		return
	}
	s.relays[r] = struct{}{}
	s.mu.Unlock()
	r.run()
	s.mu.Lock()
	delete(s.relays, r)
	s.mu.Unlock()
	log.Debug("client disconnected")
}

// loggedIn counts a connection out of the not-logged-in ones.
func (s *Server) loggedIn() {
	s.mu.Lock()
	s.preAuth--
	s.mu.Unlock()
}

// Close stops accepting, lets commands in flight finish (bounded by Options.ShutdownTimeout), then says BYE
// to every client and closes its upstream connection. It returns when all connections are gone.
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
	relays := make([]*relay, 0, len(s.relays))
	for r := range s.relays {
		relays = append(relays, r)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.shutdown(ctx)
		}()
	}
	wg.Wait()
	s.conns.Wait()
	return nil
}
