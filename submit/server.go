package submit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/smimeproxy/smimeproxy/keystore"
)

// Options configure a Server. Upstream, Keys and Book are required.
type Options struct {
	// Upstream is the real submission server: smtps://host[:465] or smtp://host[:587] (ParseURL).
	Upstream string
	// CAFile is a PEM file of CA certificates trusted for the upstream in addition to the system roots.
	CAFile string
	// AllowPlaintext permits smtp:// without STARTTLS to a host that is not on loopback.
	AllowPlaintext bool
	// TLSConfig, if set, is cloned as the base of the upstream TLS configuration (tests).
	TLSConfig *tls.Config
	// DialTimeout bounds connecting to the upstream; 0 means 30 seconds.
	DialTimeout time.Duration
	// Keys holds the users' private keys (signing, and the sender's own certificate as a recipient).
	Keys keystore.Store
	// Book is the users' address book: the recipients' certificates and SMIMECapabilities.
	Book keystore.AddressBook
	// KeyUser maps the login to the key-store user; nil means the login itself.
	KeyUser func(login string) string
	// Policy is the signing and encryption policy; the zero value signs always and encrypts if possible.
	Policy Policy
	// ProtectSubject applies RFC 9788 header protection: the signed (or, unsigned, the encrypted) payload
	// carries the message's header fields under hp="cipher", and the outer header of an encrypted message has
	// "Subject: [...]" (smime.SignProtected, smime.EncryptProtected). Signed-only mail gets hp="clear" and keeps
	// its Subject. Recipients whose client does not implement RFC 9788 see the subject "[...]".
	ProtectSubject bool
	// Domain is the name in the greeting and in EHLO upstream; default "localhost".
	Domain string
	// MaxMessageBytes is the largest message accepted; 0 means DefaultMaxMessageBytes.
	MaxMessageBytes int64
	// Logger receives one line per message and per failure (never content or passwords); nil discards.
	Logger *slog.Logger
	// Now is the clock for certificate validity; nil means time.Now.
	Now func() time.Time
}

// DefaultMaxMessageBytes is the default Options.MaxMessageBytes.
const DefaultMaxMessageBytes = 50 << 20

// maxRecipients bounds RCPT TO per message (RFC 5321 section 4.5.3.1.8 asks servers to take at least 100).
const maxRecipients = 100

func (o *Options) domain() string {
	if o.Domain == "" {
		return "localhost"
	}
	return o.Domain
}

// Server is the submission front end. Create it with New, run it with Serve, stop it with Close.
type Server struct {
	o   Options
	srv *smtp.Server
	log *slog.Logger
}

// New checks o and returns a Server.
func New(o Options) (*Server, error) {
	if o.Keys == nil || o.Book == nil {
		return nil, errors.New("submit: a key store and an address book are required")
	}
	if _, err := ParseURL(o.Upstream); err != nil {
		return nil, err
	}
	if err := o.Policy.Check(); err != nil {
		return nil, err
	}
	o.Policy = o.Policy.withDefaults()
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{o: o, log: log}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = o.domain()
	srv.MaxRecipients = maxRecipients
	srv.MaxMessageBytes = o.MaxMessageBytes
	// The listener is meant for 127.0.0.1: the password crosses only the loopback interface, as with the IMAP
	// listener (README). AUTH is relayed upstream over TLS.
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = true
	srv.EnableBINARYMIME = true
	srv.ReadTimeout = 10 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = slogLogger{log}
	s.srv = srv
	return s, nil
}

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the listener and closes every connection.
func (s *Server) Close() error { return s.srv.Close() }

// slogLogger adapts go-smtp's logger (connection errors) to slog.
type slogLogger struct{ l *slog.Logger }

func (l slogLogger) Printf(format string, v ...any) {
	l.l.Debug("smtp", "msg", fmt.Sprintf(format, v...))
}
func (l slogLogger) Println(v ...any) { l.l.Debug("smtp", "msg", fmt.Sprint(v...)) }
