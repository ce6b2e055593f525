package main

import (
	"crypto/tls"
	"flag"

	"github.com/smimeproxy/smimeproxy/tlscert"
)

// tlsFlags are the client-facing TLS options of serve (and doctor, which checks them).
type tlsFlags struct {
	cert, key string
	force     bool
}

// addTLSFlags registers --tls-cert and --tls-key on fs.
func addTLSFlags(fs *flag.FlagSet) *tlsFlags {
	f := &tlsFlags{}
	fs.StringVar(&f.cert, "tls-cert", "", "PEM certificate (chain) the proxy presents to mail clients, with --tls-key; default: generated when TLS is needed")
	fs.StringVar(&f.key, "tls-key", "", "PEM private key for --tls-cert")
	fs.BoolVar(&f.force, "tls", false, "serve implicit TLS even on a loopback address (for mail clients that insist on it); without --tls-cert a certificate is generated (and kept in Vault)")
	return f
}

// serverConfig returns the TLS configuration for a client listener on listen (host:port), following the
// listening policy (see package tlscert): the files when given; else, on a non-loopback address, a generated
// certificate; else (loopback, no files) nil, meaning plaintext is allowed. cert is the certificate in use (nil
// with a nil config); generated says it was made now, so the caller should log its fingerprint (and may store
// its PEM bytes).
func (f *tlsFlags) serverConfig(listen string) (conf *tls.Config, cert *tlscert.Cert, generated bool, err error) {
	if f.cert == "" && f.key == "" && tlscert.IsLoopback(listen) && !f.force {
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
