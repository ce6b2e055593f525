package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/submit"
)

// The sending half of the demo: the submission front end (package submit) on 127.0.0.1, relaying to an
// in-process SMTP server that stands for the user's real submission server and delivers into the demo's
// in-memory IMAP mailbox. Mail sent to DefaultEmail through the submission listener is signed with the demo key
// and encrypted to the demo certificate (the only one in the demo's address book), lands upstream as
// ciphertext, and reads back decrypted, with a valid signature status, through the IMAP proxy.

// DefaultSubmissionListen is the default Options.SubmissionListen.
const DefaultSubmissionListen = "127.0.0.1:1587"

// maxDemoMessage bounds a message the demo's SMTP server accepts.
const maxDemoMessage = 10 << 20

// mailDrop is the demo's SMTP server (RFC 5321, RFC 4954 AUTH PLAIN for DefaultUser): it appends every message
// addressed to DefaultEmail to INBOX of the in-memory IMAP server and refuses every other recipient.
type mailDrop struct {
	user *imapmemserver.User
	mu   *sync.Mutex // the upstream IMAP sessions' lock (upstreamSession)
}

func (m *mailDrop) NewSession(*smtp.Conn) (smtp.Session, error) { return &dropSession{m: m}, nil }

type dropSession struct {
	m      *mailDrop
	authed bool
	rcpts  int
}

var _ smtp.AuthSession = (*dropSession)(nil)

func (s *dropSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *dropSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if (identity != "" && identity != username) || username != DefaultUser || password != DefaultPassword {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}

func (s *dropSession) Mail(string, *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	s.rcpts = 0
	return nil
}

func (s *dropSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	if !strings.EqualFold(strings.TrimSpace(to), DefaultEmail) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
			Message: "The demo delivers only to " + DefaultEmail}
	}
	s.rcpts++
	return nil
}

func (s *dropSession) Data(r io.Reader) error {
	if !s.authed || s.rcpts == 0 {
		return smtp.ErrAuthRequired
	}
	msg, err := io.ReadAll(io.LimitReader(r, maxDemoMessage+1))
	if err != nil {
		return err
	}
	if len(msg) > maxDemoMessage {
		return smtp.ErrDataTooLarge
	}
	// A real MTA adds a trace field (RFC 5321 section 4.4); IMAP serves CRLF.
	msg = append([]byte("Received: from localhost by smimeproxy-demo; "+time.Now().Format(time.RFC1123Z)+"\r\n"), toCRLF(msg)...)
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if _, err := s.m.user.Append("INBOX", literal(msg), &imap.AppendOptions{Time: time.Now()}); err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Mailbox unavailable"}
	}
	return nil
}

func (s *dropSession) Reset()        { s.rcpts = 0 }
func (s *dropSession) Logout() error { return nil }

// toCRLF turns bare LFs into CRLF.
func toCRLF(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// startSending starts the demo's SMTP server on a free loopback port and the submission listener in front of
// it on listen (or a free port of the same host when listen is busy). The address book of DefaultUser holds the
// demo certificate, trusted, announcing AES-256-GCM.
func (d *Demo) startSending(ctx context.Context, listen string, store keystore.Store, book keystore.AddressBook, protect bool, log *slog.Logger) error {
	drop := smtp.NewServer(&mailDrop{user: d.mailbox, mu: d.mu})
	drop.Domain = "upstream.smimeproxy-demo.invalid"
	drop.AllowInsecureAuth = true // loopback only; its one client is the submission front end
	drop.MaxMessageBytes = maxDemoMessage
	drop.ErrorLog = smtpLogger{log}
	dln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: SMTP upstream: %w", err)
	}
	go drop.Serve(dln)
	d.closers = append(d.closers, drop.Close)
	d.smtpUpstream = dln.Addr().String()

	srv, err := submit.New(submit.Options{Upstream: "smtp://" + d.smtpUpstream, Keys: store, Book: book,
		ProtectSubject: protect, Logger: log})
	if err != nil {
		return err
	}
	ln, err := listenLoopback(listen)
	if err != nil {
		return err
	}
	go func() {
		if err := srv.Serve(ln); err != nil {
			log.Warn("demo: submission listener stopped", slog.Any("err", err))
		}
	}()
	d.closers = append(d.closers, srv.Close)
	d.submission = ln.Addr().String()
	return nil
}

// smtpLogger adapts slog to go-smtp's logger.
type smtpLogger struct{ l *slog.Logger }

func (s smtpLogger) Printf(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s smtpLogger) Println(v ...any)               { s.l.Debug(fmt.Sprint(v...)) }

// SubmissionAddr is the submission listener's address (host:port): SMTP with AUTH PLAIN or LOGIN as demo/demo.
func (d *Demo) SubmissionAddr() string { return d.submission }

// checkSend sends a message to DefaultEmail through the submission listener and reads it back: through the
// proxy it must be decrypted, signed with a valid signature, with its text and its real Subject; upstream it
// must be S/MIME ciphertext without the text.
func (d *Demo) checkSend(ctx context.Context) error {
	tok := make([]byte, 8)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	token := "demo-check-" + hex.EncodeToString(tok)
	subject := "Sent through smimeproxy " + token
	text := "This message went through the submission listener: signed and encrypted by the proxy (" + token + ")."
	msg := "From: smimeproxy demo <" + DefaultEmail + ">\r\nTo: " + DefaultEmail + "\r\nSubject: " + subject + "\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <" + token + "@smimeproxy.invalid>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
	if err := sendMail(ctx, d.submission, msg); err != nil {
		return fmt.Errorf("send through %s: %w", d.submission, err)
	}
	proxied, err := fetchSince(ctx, d.addr, imap.UID(len(Samples)+1))
	if err != nil {
		return fmt.Errorf("read back through the proxy: %w", err)
	}
	uid, got := imap.UID(0), []byte(nil)
	for u, m := range proxied {
		if bytes.Contains(m, []byte(text)) {
			uid, got = u, m
		}
	}
	if got == nil {
		return fmt.Errorf("the sent message is not in INBOX through the proxy (%d new messages)", len(proxied))
	}
	if st := StatusOf(got); st != "decrypted" {
		return fmt.Errorf("the sent message: status %q, want decrypted", st)
	}
	if sig := headerValue(got, smime.SignatureHeader); !strings.HasPrefix(sig, "valid") {
		return fmt.Errorf("the sent message: signature status %q, want valid", sig)
	}
	if headerValue(got, "Subject") != subject {
		return fmt.Errorf("the sent message: subject %q, want %q", headerValue(got, "Subject"), subject)
	}
	stored, err := fetchSince(ctx, d.upstream, uid)
	if err != nil {
		return fmt.Errorf("read back upstream: %w", err)
	}
	raw := stored[uid]
	if raw == nil || bytes.Contains(raw, []byte(text)) || !bytes.Contains(raw, []byte("application/pkcs7-mime")) {
		return errors.New("the sent message is not stored upstream as S/MIME ciphertext")
	}
	return nil
}

// sendMail submits msg from and to DefaultEmail at addr, authenticating as DefaultUser with AUTH PLAIN.
func sendMail(ctx context.Context, addr, msg string) error {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", DefaultUser, DefaultPassword)); err != nil {
		return err
	}
	if err := c.SendMail(DefaultEmail, []string{DefaultEmail}, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// fetchSince logs in at addr and returns BODY.PEEK[] of the INBOX messages with UID from and above, by UID.
func fetchSince(ctx context.Context, addr string, from imap.UID) (map[imap.UID][]byte, error) {
	c, err := login(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSet{{Start: from, Stop: 0}}, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		return nil, err
	}
	out := map[imap.UID][]byte{}
	for _, m := range msgs {
		if m.UID >= from { // "N:*" also matches the last message when all UIDs are below N (RFC 9051 section 6.4.8)
			out[m.UID] = m.FindBodySection(section)
		}
	}
	c.Logout().Wait()
	return out, nil
}

// headerValue returns the unfolded value of the first header field called name in msg, "" when there is none.
func headerValue(msg []byte, name string) string {
	var val string
	in, found := false, false
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
		if k, v, ok := strings.Cut(line, ":"); ok && !found && strings.EqualFold(k, name) {
			val, in, found = strings.TrimSpace(v), true, true
		}
	}
	return val
}
