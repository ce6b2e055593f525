package main

import (
	"context"
	"crypto/tls"
	"flag"
	"log/slog"
	"net"

	"github.com/smimeproxy/smimeproxy/tlscert"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// tlsFlags are the client-facing TLS options of serve (and doctor, which checks them).
type tlsFlags struct {
	cert, key string
	force     bool
	starttls  bool
}

// addTLSFlags registers --tls-cert, --tls-key, --tls and --starttls on fs.
func addTLSFlags(fs *flag.FlagSet) *tlsFlags {
	f := &tlsFlags{}
	fs.StringVar(&f.cert, "tls-cert", "", "PEM certificate (chain) the proxy presents to mail clients, with --tls-key; default: generated when TLS is needed")
	fs.StringVar(&f.key, "tls-key", "", "PEM private key for --tls-cert")
	fs.BoolVar(&f.force, "tls", false, "serve implicit TLS even on a loopback address (for mail clients that insist on it); without --tls-cert a certificate is generated (and kept in Vault)")
	fs.BoolVar(&f.starttls, "starttls", true, "offer STARTTLS on a plaintext loopback listener (most mail clients try or insist on it), with a generated certificate kept in Vault ('smimeproxy tls export' prints it); plaintext LOGIN stays allowed there")
	return f
}

// clientTLSMode is how mail clients reach the listener.
type clientTLSMode int

const (
	tlsNone     clientTLSMode = iota // plaintext only (loopback, --starttls=false)
	tlsStartTLS                      // plaintext, STARTTLS offered (RFC 9051 section 6.2.1)
	tlsImplicit                      // implicit TLS (RFC 8314 section 3.2)
)

func (m clientTLSMode) String() string {
	return [...]string{"none", "starttls", "implicit"}[m]
}

// mode applies the listening policy (see package tlscert) to a listener on listen (host:port): implicit TLS
// with certificate files, with --tls, and on any non-loopback address; else, on loopback, plaintext with
// STARTTLS offered unless --starttls=false.
func (f *tlsFlags) mode(listen string) clientTLSMode {
	switch {
	case f.cert != "" || f.key != "" || f.force || !tlscert.IsLoopback(listen):
		return tlsImplicit
	case f.starttls:
		return tlsStartTLS
	}
	return tlsNone
}

// serverConfig returns the TLS configuration for a client listener on listen (host:port), following mode: the
// files when given, else a generated certificate; nil when the listener is plaintext only. cert is the
// certificate in use (nil with a nil config); generated says it was made now, so the caller should log its
// fingerprint (and may store its PEM bytes).
func (f *tlsFlags) serverConfig(listen string) (conf *tls.Config, cert *tlscert.Cert, generated bool, err error) {
	if f.mode(listen) == tlsNone {
		return nil, nil, false, nil
	}
	cert, generated, err = tlscert.LoadOrGenerate(f.cert, f.key)
	if err != nil {
		return nil, nil, false, err
	}
	if err := tlscert.CheckListen(listen, true); err != nil { // cannot fail with TLS; kept as the policy's one entry point
		return nil, nil, false, err
	}
	return tlscert.ServerConfig(cert), cert, generated, nil
}

// startTLSConfig is proxy.Options.StartTLS for a listener on listen: conf when STARTTLS is offered there.
func (f *tlsFlags) startTLSConfig(listen string, conf *tls.Config) *tls.Config {
	if f.mode(listen) != tlsStartTLS {
		return nil
	}
	return conf
}

// listener wraps ln for implicit TLS when that is the mode, and logs the certificate's fingerprint (what a
// mail client shows when asked to trust it; 'smimeproxy tls export' prints the certificate itself).
func (f *tlsFlags) listener(ln net.Listener, listen string, conf *tls.Config, cert *tlscert.Cert, generated bool, logger *slog.Logger) net.Listener {
	if conf == nil {
		return ln
	}
	mode := f.mode(listen)
	if mode == tlsImplicit {
		ln = tls.NewListener(ln, conf)
	}
	if generated {
		logger.Warn("generated a TLS certificate for clients; trust it in your mail client ('smimeproxy tls export' prints it)", "tls", mode.String(), "sha256", cert.Fingerprint())
	} else {
		logger.Info("client TLS certificate", "tls", mode.String(), "sha256", cert.Fingerprint())
	}
	return ln
}

// clientTLSFor is serve's client TLS: clientTLS (the certificate kept in Vault), except that for STARTTLS on
// loopback, which is an offer beside plaintext rather than a requirement, a Vault that cannot keep the
// certificate (a token without access to its path) only costs a certificate for this process, with a warning.
func (sf *serveFlags) clientTLSFor(ctx context.Context, store *vaultcfg.Store, logger *slog.Logger) (*tls.Config, *tlscert.Cert, bool, error) {
	conf, cert, generated, err := sf.clientTLS(ctx, store, logger)
	if err != nil && store != nil && sf.tls.mode(sf.listen) == tlsStartTLS && sf.tls.cert == "" && sf.tls.key == "" {
		logger.Warn("cannot keep the STARTTLS certificate in vault; using one for this process only (clients must trust it again after a restart)", "err", err)
		return sf.tls.serverConfig(sf.listen)
	}
	return conf, cert, generated, err
}
