package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"

	"github.com/smimeproxy/smimeproxy/submit"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// submitFlags are serve's flags of the SMTP submission front end (package submit).
type submitFlags struct {
	listen   string
	upstream string
	sign     string
	encrypt  string
	protect  bool
}

func addSubmitFlags(fs *flag.FlagSet) *submitFlags {
	s := &submitFlags{}
	fs.StringVar(&s.listen, "submission-listen", "", "address mail clients send through (host:port, e.g. 127.0.0.1:1587): signs with the user's key and encrypts to the recipients; empty: no submission listener")
	fs.StringVar(&s.upstream, "submission-upstream", "", "real submission server: smtps://host[:465] (implicit TLS) or smtp://host[:587] (STARTTLS); verified like --upstream, with --upstream-ca-file")
	fs.StringVar(&s.sign, "submission-sign", submit.SignAlways, "sign outgoing mail: always (a sender without a key is refused) or never; per message [sign]/[nosign] in the subject")
	fs.StringVar(&s.encrypt, "submission-encrypt", submit.EncryptIfPossible, "encrypt outgoing mail: never, if-possible (every recipient has a certificate) or always (refuse otherwise); per message [encrypt] in the subject")
	fs.BoolVar(&s.protect, "protect-subject", false, "RFC 9788 header protection of outgoing mail: the real Subject travels inside the encryption, outside it is \"[...]\" (recipients' clients without RFC 9788 show that)")
	return s
}

// options returns the submit.Options of the flags, or an error naming the flag that is wrong. ok is false when
// no submission listener is configured.
func (s *submitFlags) options(store *vaultcfg.Store, keyUser func(string) string, caFile string, allowPlaintext bool, logger *slog.Logger) (submit.Options, bool, error) {
	if s.listen == "" {
		if s.upstream != "" {
			return submit.Options{}, false, errors.New("--submission-upstream needs --submission-listen")
		}
		return submit.Options{}, false, nil
	}
	if s.upstream == "" {
		return submit.Options{}, false, errors.New("--submission-listen needs --submission-upstream smtps://host or smtp://host:587")
	}
	if _, err := net.ResolveTCPAddr("tcp", s.listen); err != nil {
		return submit.Options{}, false, fmt.Errorf("--submission-listen %q: %w", s.listen, err)
	}
	if store == nil {
		return submit.Options{}, false, errors.New("--submission-listen needs the key store; it cannot be combined with --no-decrypt")
	}
	o := submit.Options{Upstream: s.upstream, CAFile: caFile, AllowPlaintext: allowPlaintext, Keys: store,
		Book: store.Contacts(), KeyUser: keyUser, Logger: logger, Policy: submit.Policy{Sign: s.sign, Encrypt: s.encrypt}, ProtectSubject: s.protect}
	if _, err := submit.ParseURL(s.upstream); err != nil {
		return submit.Options{}, false, err
	}
	if err := o.Policy.Check(); err != nil {
		return submit.Options{}, false, err
	}
	return o, true, nil
}

// start starts the submission listener when configured; stop closes it.
func (s *submitFlags) start(store *vaultcfg.Store, keyUser func(string) string, caFile string, allowPlaintext bool, logger *slog.Logger) (stop func(), err error) {
	o, ok, err := s.options(store, keyUser, caFile, allowPlaintext, logger)
	if err != nil || !ok {
		return func() {}, err
	}
	srv, err := submit.New(o)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return nil, err
	}
	if h, _, _ := net.SplitHostPort(s.listen); !isLoopbackHost(h) {
		logger.Warn("submission listener is not on loopback: passwords cross the network in clear", "listen", s.listen)
	}
	logger.Info("submission listener", "listen", ln.Addr().String(), "upstream", s.upstream, "sign", o.Policy.Sign, "encrypt", o.Policy.Encrypt)
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}

func isLoopbackHost(h string) bool {
	ip := net.ParseIP(h)
	return h == "localhost" || ip != nil && ip.IsLoopback()
}
