package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/smimeproxy/smimeproxy/backend"
)

// relay is one client connection and its upstream connection. Three goroutines move the stream:
//
//   - clientLoop reads the client's commands (cmd.go), forwards each upstream (unchanged, or rewritten where
//     decryption requires it) and records it as pending;
//   - upstreamLoop reads the upstream's responses (resp.go), rewrites the few that carry content of an
//     encrypted message (fetch.go) and queues everything for the client in the server's order;
//   - writeLoop writes the queue to the client; an entry may be waiting for a decryption, which runs on its
//     own goroutine, so several messages are decrypted ahead of the writer while the order stays the
//     server's.
type relay struct {
	srv    *Server
	log    *slog.Logger
	client *clientConn   // switches to TLS after STARTTLS (starttls.go)
	cr     *bufio.Reader // client side, read by clientLoop only
	up     *backend.Stream
	upw    *bufio.Writer // upstream side, written by clientLoop only

	out  chan outEntry // to writeLoop
	done chan struct{} // closed when the relay ends

	ctx    context.Context // cancelled when the relay ends
	cancel context.CancelFunc

	mu       sync.Mutex
	cond     *sync.Cond // signalled when pending shrinks
	pending  []*command // forwarded, tagged response not yet seen, in the order sent
	waitCont *command   // command whose synchronizing literal waits for the upstream's "+"
	upCaps   capSet
	tlsOn    bool        // the client connection is TLS (implicit, or after STARTTLS)
	user     string      // key-store user after login ("" before)
	auth     *authInfo   // how the user logged in (replayed on side connections)
	side     *sidePool   // after login, when decrypting
	mbox     mailboxRef  // selected mailbox, as of the responses read so far (upstreamLoop)
	utf8     bool        // UTF8=ACCEPT enabled (RFC 6855): mailbox names on the wire are UTF-8
	notify   *fetchReq   // NOTIFY MessageNew fetch attributes, for pushed FETCH responses
	batch    []byte      // responses upstreamLoop has not queued yet (emit)
	onLogin  func()      // called once when the user logged in
	failures int         // failed logins (upstreamLoop)
	itemsBuf []fetchItem // upstreamLoop's reusable FETCH item buffer
	sctx     contextSet  // CONTEXT=SEARCH contexts the relay keeps (context.go)

	ixMu     sync.Mutex
	ix       *mailboxIndex // lastIndex
	ixFor    mailboxRef
	sawBye   bool
	closing  bool
	stopOnce sync.Once
}

// mailboxRef names the selected mailbox; zero when none is selected.
type mailboxRef struct {
	wire        string // the name as the client sent it (modified UTF-7 or UTF-8)
	name        string // UTF-8, for the side connection and MessageRef
	uidValidity uint32
	ok          bool // name could be decoded: decryption applies
}

// outEntry is one piece of output for the client, written in queue order.
type outEntry struct {
	data    []byte
	future  chan [][]byte // when set, the data arrives later (a rewritten response), in parts
	stream  *streamEntry  // when set, n bytes are copied from the upstream reader after data
	close   bool          // close the client connection after writing data
	fin     chan struct{} // closed after a close entry was handled
	pooled  bool          // data came from batchPool and goes back after writing
	upgrade *tlsSwitch    // STARTTLS: after data, flush and wait for the TLS connection
}

// batchPool recycles emit's batch buffers.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// streamEntry hands a large literal from upstreamLoop to writeLoop without buffering it.
type streamEntry struct {
	n    int64
	done chan error
}

func newRelay(s *Server, c net.Conn, up *backend.Stream, log *slog.Logger) *relay {
	ctx, cancel := context.WithCancel(context.Background())
	cc := &clientConn{conn: c}
	r := &relay{
		srv:    s,
		log:    log,
		client: cc,
		cr:     bufio.NewReaderSize(cc, 64<<10),
		up:     up,
		upw:    bufio.NewWriterSize(up.Conn, 64<<10),
		out:    make(chan outEntry, 64),
		done:   make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
	}
	r.cond = sync.NewCond(&r.mu)
	_, r.tlsOn = c.(*tls.Conn)
	return r
}

// run relays until either side ends, then closes both connections.
func (r *relay) run() {
	greeting := r.clientCaps(r.up.Greeting, func(list []byte) { r.upCaps = parseCaps(list) })
	r.out <- outEntry{data: greeting}
	preAuth := time.AfterFunc(r.srv.opts.PreAuthTimeout, func() {
		if r.userName() == "" {
			r.log.Info("no login in time; closing")
			r.stop("Disconnected for inactivity")
		}
	})
	defer preAuth.Stop()
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); r.guard("client", r.clientLoop) }()
	go func() { defer wg.Done(); r.guard("upstream", r.upstreamLoop) }()
	go func() { defer wg.Done(); r.guard("writer", r.writeLoop) }()
	wg.Wait()
	if r.side != nil {
		r.srv.releaseSide(r.side)
	}
}

func (r *relay) decrypting() bool { return r.srv.opts.Rewriter != nil }

// rewriting reports whether the session is logged in with decryption on (a side pool exists).
func (r *relay) rewriting() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.side != nil
}

// guard runs one loop; a panic is logged (never content) and ends the relay with BYE.
func (r *relay) guard(name string, loop func() error) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("panic in relay", "loop", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			r.stop("Internal error")
		}
	}()
	err := loop()
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) && r.ctx.Err() == nil {
		r.log.Debug("relay loop ended", "loop", name, "err", err)
	}
	switch name {
	case "client":
		// The client went away (or broke the protocol beyond repair): nothing more to write.
		r.stop("")
	case "upstream":
		if err != nil && r.ctx.Err() == nil && !r.byeSeen() {
			r.log.Warn("upstream connection lost", "err", err)
			r.srv.opts.Metrics.UpstreamError()
			r.stop("Upstream server connection lost")
			return
		}
		r.finish()
	case "writer":
		r.stop("")
	}
}

func (r *relay) byeSeen() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sawBye
}

// finish lets the writer write everything queued, then close (the upstream ended the session: LOGOUT, BYE).
func (r *relay) finish() {
	r.flushBatch()
	select {
	case r.out <- outEntry{close: true}:
	case <-r.done:
	}
}

// stop ends the relay. With bye set, "* BYE bye" is queued behind what is already queued and the writer gets
// a bounded time to write it (RFC 9051 section 7.1.5).
func (r *relay) stop(bye string) {
	r.stopOnce.Do(func() {
		if bye != "" {
			fin := make(chan struct{})
			select {
			case r.out <- outEntry{data: []byte("* BYE " + bye + "\r\n"), close: true, fin: fin}:
				select {
				case <-fin:
				case <-time.After(byeTimeout):
				}
			case <-time.After(byeTimeout):
			}
		}
		r.cancel()
		close(r.done)
		r.client.Close()
		r.up.Conn.Close()
		r.mu.Lock()
		r.closing = true
		r.cond.Broadcast()
		r.mu.Unlock()
	})
}

// byeTimeout bounds how long stop waits for the writer to deliver a BYE.
const byeTimeout = 3 * time.Second

// writeLoop writes queued output to the client, flushing whenever the queue is momentarily empty.
func (r *relay) writeLoop() error {
	w := bufio.NewWriterSize(r.client, 64<<10)
	for {
		var e outEntry
		select {
		case e = <-r.out:
		case <-r.done:
			return nil
		}
		data := e.data
		if e.future != nil {
			var parts [][]byte
			select {
			case parts = <-e.future:
			case <-r.done:
				return nil
			}
			for _, p := range parts {
				if _, err := w.Write(p); err != nil {
					return err
				}
			}
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		if e.upgrade != nil {
			if err := r.parkForTLS(e.upgrade, w.Flush); err != nil {
				return err
			}
		}
		if e.pooled && cap(data) <= 256<<10 {
			data = data[:0]
			batchPool.Put(&data)
		}
		if e.stream != nil {
			err := r.copyLiteral(w, e.stream.n)
			e.stream.done <- err
			if err != nil {
				return err
			}
		}
		if e.close {
			w.Flush()
			r.client.Close()
			if e.fin != nil {
				close(e.fin)
			}
			return nil
		}
		if len(r.out) == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// emit queues data for the client from upstreamLoop, batching consecutive responses into one queue entry
// while more input is already buffered (flushBatch).
func (r *relay) emit(data []byte) error {
	if r.batch == nil {
		r.batch = (*batchPool.Get().(*[]byte))[:0]
	}
	r.batch = append(r.batch, data...)
	if len(r.batch) >= 64<<10 {
		return r.flushBatch()
	}
	return nil
}

// flushBatch queues what emit collected.
func (r *relay) flushBatch() error {
	if len(r.batch) == 0 {
		return nil
	}
	b := r.batch
	r.batch = nil
	select {
	case r.out <- outEntry{data: b, pooled: true}:
		return nil
	case <-r.done:
		return net.ErrClosed
	}
}

// copyLiteral copies n bytes of a literal from the upstream to the client: what the upstream reader holds,
// then, when it can, straight from socket to socket (the kernel copies: splice between TCP sockets).
func (r *relay) copyLiteral(w *bufio.Writer, n int64) error {
	k := min(int64(r.up.R.Buffered()), n)
	if _, err := io.CopyN(w, r.up.R, k); err != nil {
		return err
	}
	n -= k
	if n == 0 {
		return nil
	}
	if r.up.Raw == nil || n < 1<<20 {
		_, err := io.CopyN(w, r.up.R, n)
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if _, ok := r.up.Raw.(*net.TCPConn); ok {
		_, err := io.CopyN(r.client, r.up.Raw, n) // splice(2) when the client is TCP too
		return err
	}
	// TLS: gather several records per write (at least 128 KiB: fewer, larger writes keep the client's reads
	// and the upstream's TLS records flowing on 2 cores).
	buf := make([]byte, min(n, 256<<10))
	for n > 0 {
		k, err := io.ReadAtLeast(r.up.Raw, buf[:min(n, int64(len(buf)))], int(min(n, 128<<10)))
		if k > 0 {
			if _, werr := r.client.Write(buf[:k]); werr != nil {
				return werr
			}
			n -= int64(k)
		}
		if err != nil {
			if n == 0 {
				return nil
			}
			return err
		}
	}
	return nil
}

// send queues data for the client.
func (r *relay) send(data []byte) error {
	select {
	case r.out <- outEntry{data: data}:
		return nil
	case <-r.done:
		return net.ErrClosed
	}
}

// sendFuture queues a response computed elsewhere.
func (r *relay) sendFuture(f chan [][]byte) error {
	select {
	case r.out <- outEntry{future: f}:
		return nil
	case <-r.done:
		return net.ErrClosed
	}
}

// addPending records a forwarded command.
func (r *relay) addPending(c *command) {
	r.mu.Lock()
	r.pending = append(r.pending, c)
	r.mu.Unlock()
}

// findPending returns the pending command tagged tag (nil if none).
func (r *relay) findPending(tag []byte) *command {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.pending {
		if c.tag == string(tag) {
			return c
		}
	}
	return nil
}

// removePending removes c from the pending commands, once its tagged response is queued.
func (r *relay) removePending(c *command) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := slices.Index(r.pending, c); i >= 0 {
		r.pending = slices.Delete(r.pending, i, i+1)
		r.cond.Broadcast()
	}
}

// waitIdle waits until every forwarded command has its tagged response (a barrier before the relay answers
// a command itself, or reads state that the responses update).
func (r *relay) waitIdle() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.pending) > 0 && !r.closing {
		r.cond.Wait()
	}
	if r.closing {
		return net.ErrClosed
	}
	return nil
}

// selected returns the selected mailbox as of the responses read so far.
func (r *relay) selected() mailboxRef {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mbox
}

// ref names uid of mailbox m for the Rewriter.
func (r *relay) ref(m mailboxRef, uid uint32) MessageRef {
	return MessageRef{User: r.userName(), Mailbox: m.name, UIDValidity: m.uidValidity, UID: uid}
}

// shutdown waits (bounded by ctx) for the commands in flight, then says BYE and ends the relay.
func (r *relay) shutdown(ctx context.Context) {
	idle := make(chan struct{})
	go func() {
		// An IDLE never completes by itself: it does not hold the shutdown up.
		r.mu.Lock()
		for !r.closing && slices.ContainsFunc(r.pending, func(c *command) bool { return c.name != "IDLE" }) {
			r.cond.Wait()
		}
		r.mu.Unlock()
		close(idle)
	}()
	select {
	case <-idle:
	case <-ctx.Done():
	}
	r.stop("Server shutting down")
	<-r.done
}

// userName returns the logged-in user ("" before login).
func (r *relay) userName() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.user
}

// loggedIn records a successful login.
func (r *relay) loggedIn(a *authInfo) {
	user, err := a.identity()
	if err != nil {
		r.log.Warn("logged in upstream, but the user name is unknown; not decrypting", "err", err)
		return
	}
	var side *sidePool
	if r.decrypting() {
		side = r.srv.acquireSide(user, a)
	}
	r.mu.Lock()
	r.user, r.auth, r.side = user, a, side
	r.log = r.log.With("user", user)
	r.mu.Unlock()
	r.log.Info("logged in")
	r.srv.opts.Metrics.Login(true)
	if r.onLogin != nil {
		r.onLogin()
		r.onLogin = nil
	}
}

// loginDelay is how long a failed login's answer is held back from a client that is not on this machine:
// a second per failure on the connection, at most five (password guessing through a proxy reachable from
// elsewhere, `serve --tls`).
func (r *relay) loginDelay() time.Duration {
	if a, ok := r.client.RemoteAddr().(*net.TCPAddr); !ok || a.IP.IsLoopback() {
		return 0
	}
	return min(time.Duration(r.failures)*time.Second, 5*time.Second)
}
