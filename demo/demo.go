package demo

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/metastore"
)

// Defaults of Options.
const (
	DefaultListen   = "127.0.0.1:1143"
	DefaultUser     = "demo"
	DefaultPassword = "demo"
	DefaultEmail    = "demo@example.com"
)

// checkTimeout bounds Check's whole IMAP conversation.
const checkTimeout = 30 * time.Second

// Options configure Start. The zero value runs the demo on DefaultListen with an in-memory key store.
type Options struct {
	// Listen is the proxy's address; it must be a loopback address. "" means DefaultListen. When it is busy the
	// demo listens on a free port of the same host instead.
	Listen string
	// Store receives the demo key for user DefaultUser; nil means a fresh keystore.Memory.
	Store keystore.Store
	// Logger receives the proxy's and decryption logs; nil discards them.
	Logger *slog.Logger
	// Metrics receives the decryption counters; nil counts nothing.
	Metrics decrypt.Metrics
	// SubmissionListen is the submission listener's address (send.go); it must be a loopback address. "" means
	// DefaultSubmissionListen; when it is busy a free port of the same host is used.
	SubmissionListen string
	// ProtectSubject turns on RFC 9788 header protection for mail sent through the demo (submit.Options).
	ProtectSubject bool
}

// Demo is a running demo. Close stops it.
type Demo struct {
	addr         string
	upstream     string
	submission   string // submission listener (send.go)
	smtpUpstream string // the demo's SMTP server behind it
	mailbox      *imapmemserver.User
	mu           *sync.Mutex // shared by the upstream IMAP sessions and the SMTP delivery
	cert         *x509.Certificate
	keyEntry     keystore.Entry
	storeKind    string

	closeOnce sync.Once
	closers   []func() error // run in reverse order
	closeErr  error
}

// Start generates the demo key pair, puts it in the key store, starts the upstream server holding the samples
// and the proxy in front of it. It fails when a listener cannot be opened or the store refuses the key; what
// it had started is stopped then.
func Start(ctx context.Context, opts Options) (d *Demo, err error) {
	listen := opts.Listen
	if listen == "" {
		listen = DefaultListen
	}
	if err := requireLoopback(listen); err != nil {
		return nil, err
	}
	submission := opts.SubmissionListen
	if submission == "" {
		submission = DefaultSubmissionListen
	}
	if err := requireLoopback(submission); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	store := opts.Store
	kind := keystore.StorageMemory
	if store == nil {
		store = keystore.NewMemory()
	} else {
		kind = "external"
	}

	d = &Demo{storeKind: kind}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	me, err := newIdentity(DefaultEmail)
	if err != nil {
		return nil, err
	}
	stranger, err := newIdentity("someone-else@example.com")
	if err != nil {
		return nil, err
	}
	d.cert = me.cert
	if d.keyEntry, err = store.Put(ctx, DefaultUser, []*x509.Certificate{me.cert}, me.key, keystore.PutOptions{}); err != nil {
		return nil, fmt.Errorf("demo: store the demo key: %w", err)
	}
	if kind != keystore.StorageMemory {
		d.storeKind = d.keyEntry.Storage
	}

	msgs, err := buildSamples(me, stranger, DefaultEmail, time.Now().Add(-time.Hour))
	if err != nil {
		return nil, err
	}
	if err := d.startUpstream(msgs, log); err != nil {
		return nil, err
	}
	// The demo's address book: its own certificate, trusted by the user, announcing AES-256-GCM. The proxy
	// encrypts mail to demo@example.com with it and trusts the demo key's signatures through it.
	book := keystore.NewMemoryBook()
	if _, err := book.Add(ctx, DefaultUser, me.cert, keystore.AddOptions{Trust: keystore.TrustUser, Capabilities: cms.DefaultCapabilities()}); err != nil {
		return nil, fmt.Errorf("demo: address book: %w", err)
	}
	meta, _ := metastore.Open(metastore.Options{}) // in memory: the demo writes nothing to disk
	rw, err := decrypt.New(decrypt.Options{Store: store, Logger: log, Metrics: opts.Metrics, Contacts: book,
		ExplainUndecryptable: true, MetaStore: meta}) // as serve's default
	if err != nil {
		return nil, err
	}
	ln, err := listenLoopback(listen)
	if err != nil {
		return nil, err
	}
	if err := d.startProxy(ln, rw, log); err != nil {
		ln.Close()
		return nil, err
	}
	d.addr = ln.Addr().String()
	if err := d.startSending(ctx, submission, store, book, opts.ProtectSubject, log); err != nil {
		return nil, err
	}
	return d, nil
}

// startUpstream serves msgs in INBOX of an in-memory IMAP server on a free loopback port (plaintext; the
// proxy is its only client). The sessions are imapmemserver's, corrected where a client would notice (see
// upstreamSession).
func (d *Demo) startUpstream(msgs [][]byte, log *slog.Logger) error {
	mem := imapmemserver.New()
	user := imapmemserver.NewUser(DefaultUser, DefaultPassword)
	if err := user.Create("INBOX", nil); err != nil {
		return fmt.Errorf("demo: upstream: %w", err)
	}
	for i, m := range msgs {
		opts := &imap.AppendOptions{Time: time.Now().Add(time.Duration(i-len(msgs)) * time.Minute)}
		if _, err := user.Append("INBOX", literal(m), opts); err != nil {
			return fmt.Errorf("demo: upstream: append sample %d: %w", i+1, err)
		}
	}
	mem.AddUser(user)
	mu := &sync.Mutex{} // shared by the sessions, see upstreamSession, and the SMTP delivery (send.go)
	d.mailbox, d.mu = user, mu
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			s, err := newUpstreamSession(mem, mu)
			if err != nil {
				return nil, nil, err
			}
			return s, nil, nil
		},
		Caps: imap.CapSet{
			imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}, imap.CapNamespace: {}, imap.CapUIDPlus: {},
			imap.CapMove: {}, imap.CapESearch: {}, imap.CapListExtended: {}, imap.CapListStatus: {},
			imap.CapStatusSize: {}, imap.CapLiteralPlus: {}, imap.CapSpecialUse: {}, imap.CapChildren: {},
		},
		Logger:       slogLogger{log},
		InsecureAuth: true, // loopback only
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: upstream: %w", err)
	}
	d.upstream = ln.Addr().String()
	go srv.Serve(ln)
	d.closers = append(d.closers, srv.Close)
	return nil
}

// literal adapts a byte slice to imap.LiteralReader.
type byteLiteral struct {
	*bytes.Reader
	size int64
}

func (l byteLiteral) Size() int64 { return l.size }

func literal(b []byte) imap.LiteralReader { return byteLiteral{bytes.NewReader(b), int64(len(b))} }

// slogLogger adapts slog to imapserver.Logger.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Printf(format string, args ...any) { s.l.Warn(fmt.Sprintf(format, args...)) }

// requireLoopback refuses any listen address that is not a loopback IP or localhost.
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("demo: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("demo: listen address %q: the demo listens on loopback only (e.g. 127.0.0.1:1143)", addr)
	}
	return nil
}

// listenLoopback listens on addr, or on a free port of the same host when addr is in use.
func listenLoopback(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	host, _, _ := net.SplitHostPort(addr)
	ln, err2 := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err2 != nil {
		return nil, fmt.Errorf("demo: listen: %w", errors.Join(err, err2))
	}
	return ln, nil
}

// Addr is the proxy's address (host:port).
func (d *Demo) Addr() string { return d.addr }

// UpstreamAddr is the address of the in-memory upstream server (plaintext IMAP, user demo/demo). Reading
// through it shows what the mail server really stores.
func (d *Demo) UpstreamAddr() string { return d.upstream }

// Certificate is the demo certificate (the key stays in the store).
func (d *Demo) Certificate() *x509.Certificate { return d.cert }

// Close stops the proxy and the upstream server. It is safe to call more than once.
func (d *Demo) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		for i := len(d.closers) - 1; i >= 0; i-- {
			if err := d.closers[i](); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

// Instructions writes how to read the demo mailbox with curl, Python and Thunderbird.
func (d *Demo) Instructions(w io.Writer) {
	host, port, _ := net.SplitHostPort(d.addr)
	fmt.Fprintf(w, "smimeproxy demo is running: IMAP proxy on %s, user %q, password %q.\n", d.addr, DefaultUser, DefaultPassword)
	fmt.Fprintf(w, "Upstream (in-memory IMAP server, holds only ciphertext): %s. Demo key %s (%s) in the %s key store.\n\n",
		d.upstream, d.keyEntry.ID, DefaultEmail, d.storeKind)
	fmt.Fprintln(w, "Read the first message (decrypted by the proxy):")
	fmt.Fprintf(w, "  curl --user %s:%s 'imap://%s:%s/INBOX;UID=1'\n\n", DefaultUser, DefaultPassword, host, port)
	fmt.Fprintln(w, "Compare with what the mail server stores (ciphertext):")
	uh, up, _ := net.SplitHostPort(d.upstream)
	fmt.Fprintf(w, "  curl --user %s:%s 'imap://%s:%s/INBOX;UID=1'\n\n", DefaultUser, DefaultPassword, uh, up)
	fmt.Fprintln(w, "List the messages and their status with Python:")
	fmt.Fprintf(w, "  python3 -c \"import imaplib; m=imaplib.IMAP4('%s', %s); m.login('%s','%s'); m.select('INBOX'); "+
		"print(m.fetch('1:*', '(BODY.PEEK[HEADER.FIELDS (SUBJECT X-SMIMEPROXY-STATUS)])'))\"\n\n",
		host, port, DefaultUser, DefaultPassword)
	fmt.Fprintln(w, "Thunderbird: Account Settings > Account Actions > Add Mail Account, then \"Configure manually\":")
	fmt.Fprintf(w, "  incoming IMAP, server %s, port %s, connection security None, authentication Normal password,\n", host, port)
	fmt.Fprintf(w, "  username %s, password %s;\n", DefaultUser, DefaultPassword)
	sh, sp, _ := net.SplitHostPort(d.submission)
	fmt.Fprintf(w, "  outgoing SMTP, server %s, port %s, connection security None, authentication Normal password, same user.\n\n", sh, sp)
	fmt.Fprintf(w, "Send yourself a message through the submission listener on %s (signed with the demo key, encrypted to it;\n", d.submission)
	fmt.Fprintf(w, "the demo's SMTP server on %s delivers it into the demo mailbox):\n", d.smtpUpstream)
	fmt.Fprintf(w, "  printf 'From: %s\\r\\nTo: %s\\r\\nSubject: Hello from the demo\\r\\n\\r\\nSigned and encrypted by smimeproxy.\\r\\n' | "+
		"curl --silent --show-error --url smtp://%s:%s --mail-from %s --mail-rcpt %s --upload-file - --user %s:%s\n",
		DefaultEmail, DefaultEmail, sh, sp, DefaultEmail, DefaultEmail, DefaultUser, DefaultPassword)
	fmt.Fprintf(w, "  python3 -c \"import smtplib; s=smtplib.SMTP('%s', %s); s.login('%s','%s'); "+
		"s.sendmail('%s', ['%s'], 'From: %s\\r\\nTo: %s\\r\\nSubject: Hello from Python\\r\\n\\r\\nSigned and encrypted by smimeproxy.\\r\\n'); s.quit()\"\n",
		sh, sp, DefaultUser, DefaultPassword, DefaultEmail, DefaultEmail, DefaultEmail, DefaultEmail)
	fmt.Fprintf(w, "Then read it back (the newest message; UID %d is the first one sent), decrypted, with X-Smimeproxy-Signature: valid:\n", len(Samples)+1)
	fmt.Fprintf(w, "  curl --user %s:%s 'imap://%s:%s/INBOX;UID=%d'\n\n", DefaultUser, DefaultPassword, host, port, len(Samples)+1)
	fmt.Fprintln(w, "X-Smimeproxy-Status: decrypted means the proxy decrypted the message; undecryptable (with reason=...)")
	fmt.Fprintln(w, "means it could not: a short text says why, with the message as stored attached. Press Ctrl-C to stop.")
}

// Check reads every sample through the proxy with an IMAP client and verifies what a client sees: decrypted
// plaintext with the decrypted status, the plain message unchanged, the foreign one undecryptable with a
// reason; then verifies through the upstream server that it still holds no plaintext. Last it sends a message
// to itself through the submission listener and reads it back (checkSend): decrypted, signature valid.
func (d *Demo) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	proxied, err := fetchAll(ctx, d.addr)
	if err != nil {
		return fmt.Errorf("demo: check through the proxy: %w", err)
	}
	stored, err := fetchAll(ctx, d.upstream)
	if err != nil {
		return fmt.Errorf("demo: check upstream: %w", err)
	}
	if len(proxied) != len(Samples) || len(stored) != len(Samples) {
		return fmt.Errorf("demo: check: %d messages through the proxy, %d upstream, want %d", len(proxied), len(stored), len(Samples))
	}
	for i, s := range Samples {
		got, raw := proxied[i], stored[i]
		status := StatusOf(got)
		if status != s.Status {
			return fmt.Errorf("demo: check: message %d %q: status %q, want %q", i+1, s.Subject, status, s.Status)
		}
		if s.Plaintext != "" && !bytes.Contains(got, []byte(s.Plaintext)) {
			return fmt.Errorf("demo: check: message %d %q: plaintext missing", i+1, s.Subject)
		}
		if s.Status == "undecryptable" && !strings.Contains(statusField(got), "reason=") {
			return fmt.Errorf("demo: check: message %d %q: no reason in %q", i+1, s.Subject, statusField(got))
		}
		if s.Status != "" && s.Plaintext != "" && bytes.Contains(raw, []byte(s.Plaintext)) {
			return fmt.Errorf("demo: check: message %d %q: plaintext upstream", i+1, s.Subject)
		}
	}
	if err := d.checkSend(ctx); err != nil {
		return fmt.Errorf("demo: check: %w", err)
	}
	return nil
}

// fetchAll logs in at addr and returns BODY.PEEK[] of every INBOX message in UID order.
func fetchAll(ctx context.Context, addr string) ([][]byte, error) {
	c, err := login(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSet{{Start: 1, Stop: imap.UID(len(Samples))}}, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(msgs))
	for _, m := range msgs {
		if int(m.UID) < 1 || int(m.UID) > len(out) {
			return nil, fmt.Errorf("unexpected UID %d", m.UID)
		}
		out[m.UID-1] = m.FindBodySection(section)
	}
	c.Logout().Wait()
	return out, nil
}

// login connects to addr, logs in as DefaultUser and opens INBOX read-only.
func login(ctx context.Context, addr string) (*imapclient.Client, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c := imapclient.New(conn, nil)
	if err := c.Login(DefaultUser, DefaultPassword).Wait(); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// StatusOf returns the first word of msg's X-Smimeproxy-Status field, "" when it has none.
func StatusOf(msg []byte) string {
	s, _, _ := strings.Cut(statusField(msg), ";")
	return strings.TrimSpace(s)
}

// statusField returns the unfolded value of the X-Smimeproxy-Status field in msg's header.
func statusField(msg []byte) string {
	var val string
	in := false
	for _, line := range strings.Split(string(msg), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			break
		}
		if in && (line[0] == ' ' || line[0] == '\t') {
			val += line
			continue
		}
		in = false
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, decrypt.StatusField) {
			val, in = strings.TrimSpace(v), true
		}
	}
	return val
}
