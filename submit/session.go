package submit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// keyTimeout bounds the key store and address book calls for one message.
const keyTimeout = time.Minute

// Replies of the proxy itself (RFC 3463 enhanced codes).
var (
	errKeysUnavailable = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Key store unavailable, try again later"}
	errUpstreamDown = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1},
		Message: "Upstream submission server unavailable, try again later"}
	errAuthUpstreamDown = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message: "Temporary authentication failure: upstream submission server unavailable"}
)

func policyError(format string, args ...any) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: fmt.Sprintf(format, args...)}
}

// session is one client connection. The upstream connection is opened by AUTH and lives as long as it.
type session struct {
	s        *Server
	up       *smtp.Client
	identity string
	login    string
	password string // kept to log in again when the upstream connection dropped; never logged
	user     string // key-store user
	from     string
	mailOpts smtp.MailOptions
	rcpts    []string
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: s}, nil
}

var _ smtp.AuthSession = (*session)(nil)

// AuthMechanisms offers PLAIN (RFC 4616) and LOGIN, the mechanisms whose credentials can be replayed upstream.
func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (ss *session) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			return ss.authenticate(identity, username, password)
		}), nil
	case sasl.Login:
		return &loginServer{auth: func(u, p string) error { return ss.authenticate("", u, p) }}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// authenticate logs in upstream with the client's credentials; the upstream's answer is the client's.
func (ss *session) authenticate(identity, username, password string) error {
	up, err := ss.s.o.dial()
	if err != nil {
		ss.s.log.Warn("submission upstream unreachable", "err", err)
		return errAuthUpstreamDown
	}
	if err := authUpstream(up, identity, username, password); err != nil {
		up.Close()
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			ss.s.log.Info("submission login refused upstream", "login", username, "code", se.Code)
			return se
		}
		ss.s.log.Warn("submission upstream login failed", "login", username, "err", err)
		return errAuthUpstreamDown
	}
	if ss.up != nil {
		ss.up.Close()
	}
	ss.up, ss.identity, ss.login, ss.password = up, identity, username, password
	ss.user = username
	if ss.s.o.KeyUser != nil {
		ss.user = ss.s.o.KeyUser(username)
	}
	return nil
}

func authUpstream(up *smtp.Client, identity, username, password string) error {
	switch {
	case up.SupportsAuth(sasl.Plain):
		return up.Auth(sasl.NewPlainClient(identity, username, password))
	case up.SupportsAuth(sasl.Login):
		return up.Auth(sasl.NewLoginClient(username, password))
	}
	return errors.New("upstream offers neither AUTH PLAIN nor AUTH LOGIN")
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if ss.up == nil {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	ss.mailOpts = smtp.MailOptions{}
	if opts != nil {
		ss.mailOpts = smtp.MailOptions{Body: opts.Body, UTF8: opts.UTF8, RequireTLS: opts.RequireTLS,
			Return: opts.Return, EnvelopeID: opts.EnvelopeID}
	}
	ss.rcpts = nil
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if ss.up == nil {
		return smtp.ErrAuthRequired
	}
	if _, err := keystore.NormalizeAddress(to); err != nil {
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (ss *session) Reset() {
	ss.from, ss.rcpts = "", nil
}

func (ss *session) Logout() error {
	if ss.up != nil {
		ss.up.Quit()
		ss.up.Close()
		ss.up = nil
	}
	ss.password = ""
	return nil
}

// copyOut is one upstream transaction: the message and its envelope recipients.
type copyOut struct {
	rcpts []string
	msg   []byte
}

func (ss *session) Data(r io.Reader) error {
	if ss.up == nil {
		return smtp.ErrAuthRequired
	}
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), keyTimeout)
	defer cancel()
	copies, how, err := ss.build(ctx, msg)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			ss.s.log.Info("submission refused", "user", ss.user, "recipients", len(ss.rcpts), "code", se.Code, "why", se.Message)
			return se
		}
		ss.s.log.Warn("submission failed", "user", ss.user, "err", err)
		return errKeysUnavailable
	}
	if err := ss.deliver(copies); err != nil {
		ss.s.log.Info("submission not accepted upstream", "user", ss.user, "recipients", len(ss.rcpts), "err", err)
		return err
	}
	ss.s.log.Info("submitted", "user", ss.user, "recipients", len(ss.rcpts), "copies", len(copies), "how", how)
	return nil
}

// recipient is one RCPT TO address with the certificate it is encrypted to.
type recipient struct {
	addr string // normalized
	cert *x509.Certificate
	gcm  bool // its SMIMECapabilities announce AES-256-GCM
}

// build applies the policy to msg and returns the upstream transactions and a short description for the log.
// An *smtp.SMTPError is the client's answer; any other error is a key-store failure (451).
func (ss *session) build(ctx context.Context, msg []byte) ([]copyOut, string, error) {
	if smime.IsProtected(msg) {
		return []copyOut{{ss.rcpts, msg}}, "passed-through", nil
	}
	o := ss.s.o
	p := prepare(msg, o.Policy)
	now := o.Now()
	encrypt := p.d.encrypt != EncryptNever
	var recips []recipient
	if encrypt {
		var missing []string
		for _, to := range ss.rcpts {
			addr, _ := keystore.NormalizeAddress(to)
			contacts, err := o.Book.Certificates(ctx, ss.user, addr)
			if err != nil {
				return nil, "", fmt.Errorf("address book of %s: %w", ss.user, err)
			}
			r := recipient{addr: addr}
			for _, c := range contacts {
				if c.ValidAt(now) && encryptable(c.Cert) {
					r.cert, r.gcm = c.Cert, cms.HasCapability(c.Capabilities, cms.OIDAES256GCM)
					break
				}
			}
			if r.cert == nil {
				missing = append(missing, addr)
			}
			recips = append(recips, r)
		}
		if len(missing) > 0 {
			if p.d.encrypt == EncryptAlways {
				return nil, "", policyError("No S/MIME certificate for %s: not sent (encryption required)", strings.Join(missing, ", "))
			}
			encrypt = false
		}
	}
	var own *keystore.Key
	if p.d.sign || encrypt {
		var err error
		if own, err = ss.ownKey(ctx, p.from, now); err != nil {
			return nil, "", err
		}
	}
	content := p.msg
	how := "plain"
	if p.d.sign {
		if own == nil {
			return nil, "", policyError("No S/MIME key of %s for %s to sign with: not sent", ss.user, firstNonEmpty(p.from, ss.from))
		}
		signer, ok := own.Private.(crypto.Signer)
		if !ok {
			return nil, "", policyError("The S/MIME key of %s cannot sign: not sent", ss.user)
		}
		var signed []byte
		var err error
		switch {
		case o.ProtectSubject && encrypt:
			signed, err = smime.SignProtected(content, signer, own.Chain, nil, smime.HPCipher)
		case o.ProtectSubject:
			signed, err = smime.SignProtected(content, signer, own.Chain, nil, smime.HPClear)
		default:
			signed, err = smime.Sign(content, signer, own.Chain, nil)
		}
		if err != nil {
			if errors.Is(err, cms.ErrKeyOperation) {
				return nil, "", err // the key store failed: 451
			}
			return nil, "", policyError("Signing failed: %v", err)
		}
		content, how = signed, "signed"
	}
	if !encrypt {
		return []copyOut{{ss.rcpts, content}}, how, nil
	}
	var self []*x509.Certificate
	if own != nil && encryptable(own.Cert) {
		self = []*x509.Certificate{own.Cert}
	}
	// Visible recipients share one copy; each Bcc recipient gets its own.
	var main []recipient
	var mainRcpts []string
	var out []copyOut
	for i, r := range recips {
		if slices.Contains(p.visible, r.addr) {
			main = append(main, r)
			mainRcpts = append(mainRcpts, ss.rcpts[i])
		}
	}
	encryptTo := func(rs []recipient) ([]byte, error) {
		certs := append([]*x509.Certificate(nil), self...)
		gcm := true
		for _, r := range rs {
			certs = append(certs, r.cert)
			gcm = gcm && r.gcm
		}
		encrypt := smime.Encrypt
		if o.ProtectSubject && !p.d.sign {
			encrypt = smime.EncryptProtected // signed content was protected by SignProtected
		}
		enc, err := encrypt(content, certs, &cms.EncryptOptions{Authenticated: gcm})
		if err != nil {
			return nil, policyError("Encryption failed: %v", err)
		}
		return enc, nil
	}
	if len(main) > 0 {
		enc, err := encryptTo(main)
		if err != nil {
			return nil, "", err
		}
		out = append(out, copyOut{mainRcpts, enc})
	}
	for i, r := range recips {
		if slices.Contains(p.visible, r.addr) {
			continue
		}
		enc, err := encryptTo([]recipient{r})
		if err != nil {
			return nil, "", err
		}
		out = append(out, copyOut{[]string{ss.rcpts[i]}, enc})
	}
	return out, how + "+encrypted", nil
}

// encryptable reports whether cms.Encrypt can use cert's key: RSA or EC on P-256/384/521 (or an
// id-RSAES-OAEP key, which crypto/x509 leaves unparsed).
func encryptable(cert *x509.Certificate) bool {
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		return true
	case *ecdsa.PublicKey:
		_, err := k.ECDH()
		return err == nil
	case nil:
		return cert.PublicKeyAlgorithm == x509.UnknownPublicKeyAlgorithm
	}
	return false
}

// ownKey returns the user's key for the From address (else the envelope sender): valid now, its certificate
// naming the address (RFC 8550 section 3), the one valid longest. nil when there is none.
func (ss *session) ownKey(ctx context.Context, from string, now time.Time) (*keystore.Key, error) {
	o := ss.s.o
	entries, err := o.Keys.List(ctx, ss.user)
	if err != nil {
		return nil, fmt.Errorf("keys of %s: %w", ss.user, err)
	}
	var addrs []string
	for _, a := range []string{from, ss.from} {
		if n, err := keystore.NormalizeAddress(a); err == nil {
			addrs = append(addrs, n)
		}
	}
	// The addresses of a certificate: its SAN rfc822Names and legacy emailAddress attributes (CertAddresses);
	// the entries' Emails may list only the former, so the keys are looked up first.
	var ids []cms.RecipientID
	for _, e := range entries {
		if !now.Before(e.NotBefore) && !now.After(e.NotAfter) {
			ids = append(ids, recipientIDs(e.RecipientIDs)...)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys, err := o.Keys.Lookup(ctx, ss.user, ids)
	if err != nil {
		return nil, fmt.Errorf("keys of %s: %w", ss.user, err)
	}
	var best *keystore.Key
	for i, k := range keys {
		if k.Cert == nil || now.Before(k.Cert.NotBefore) || now.After(k.Cert.NotAfter) {
			continue
		}
		match := false
		for _, a := range keystore.CertAddresses(k.Cert) {
			match = match || slices.Contains(addrs, a)
		}
		if match && (best == nil || k.Cert.NotAfter.After(best.Cert.NotAfter)) {
			best = &keys[i]
		}
	}
	return best, nil
}

// recipientIDs parses cms.RecipientID.Key strings ("ski:<hex>", "iss:<hex>:<serial hex>").
func recipientIDs(keys []string) []cms.RecipientID {
	var ids []cms.RecipientID
	for _, k := range keys {
		if id, ok := cms.ParseRecipientKey(k); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// deliver sends every copy upstream, each in its own transaction; the first refusal is the client's answer.
func (ss *session) deliver(copies []copyOut) error {
	if err := ss.up.Noop(); err != nil {
		// The upstream connection dropped while the client was idle: log in again.
		ss.up.Close()
		up, err := ss.s.o.dial()
		if err != nil {
			return errUpstreamDown
		}
		if err := authUpstream(up, ss.identity, ss.login, ss.password); err != nil {
			up.Close()
			var se *smtp.SMTPError
			if errors.As(err, &se) {
				return se
			}
			return errUpstreamDown
		}
		ss.up = up
	}
	for _, c := range copies {
		if err := ss.transaction(c); err != nil {
			ss.up.Reset()
			var se *smtp.SMTPError
			if errors.As(err, &se) {
				return se
			}
			return errUpstreamDown
		}
	}
	return nil
}

func (ss *session) transaction(c copyOut) error {
	opts := ss.mailOpts
	opts.Body = "" // the client adds BODY=8BITMIME when the upstream offers it; the content is never binary here
	if opts.UTF8 && is7bitBytes(c.msg) {
		opts.UTF8 = false
	}
	if err := ss.up.Mail(ss.from, &opts); err != nil {
		return err
	}
	for _, r := range c.rcpts {
		if err := ss.up.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := ss.up.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(c.msg); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func is7bitBytes(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// loginServer is the server side of the LOGIN SASL mechanism (draft-murchison-sasl-login): "Username:" and
// "Password:" challenges, or the user name as the initial response.
type loginServer struct {
	auth     func(username, password string) error
	username string
	step     int
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step = 1
		if len(response) == 0 {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.username, l.step = string(response), 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.auth(l.username, string(response))
	}
	return nil, true, errors.New("sasl: unexpected LOGIN response")
}
