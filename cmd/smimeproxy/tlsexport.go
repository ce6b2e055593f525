package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/smimeproxy/smimeproxy/tlscert"
)

// tlsCommand is the 'tls' subcommand (main.go lists it).
func tlsCommand() command {
	return command{
		name:    "tls",
		summary: "client-facing TLS: 'tls export' prints the certificate mail clients should trust",
		run:     runTLS,
	}
}

// runTLS runs 'smimeproxy tls export': it prints the certificate serve presents to mail clients (STARTTLS on
// loopback, or implicit TLS), PEM on stdout, its SHA-256 fingerprint on stderr. It reads serve's settings
// (flags, SMIMEPROXY_* environment, the [serve] section of the config file), so it names the certificate serve
// uses: the --tls-cert file, or the generated one kept in Vault, which it generates and stores if serve has
// not yet (serve then uses the same one).
func runTLS(ctx context.Context, env *cmdEnv, args []string) int {
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprintln(env.stderr, "usage: smimeproxy tls export [serve flags: --listen, --tls-cert/--tls-key, --tls, Vault flags] > proxy.pem")
		return exitError
	}
	fs, sf := newServeFlagSet()
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: smimeproxy tls export [serve flags] > proxy.pem\n\nPrints the certificate 'serve' presents to mail clients (PEM on stdout, SHA-256 fingerprint on stderr); takes serve's flags, environment and config file.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, env, args[1:]); err != nil {
		if err == errHelp {
			return exitOK
		}
		return exitError
	}
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "smimeproxy tls export: %v\n", err)
		return exitError
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	cert, err := sf.exportCert(ctx, env)
	if err != nil {
		return fail(err)
	}
	if _, err := env.stdout.Write(cert.CertPEM); err != nil {
		return fail(err)
	}
	fmt.Fprintf(env.stderr, "smimeproxy tls export: %s (%s on %s), expires %s\nsha256 fingerprint: %s\n",
		cert.Leaf.Subject.CommonName, sf.tls.mode(sf.listen), sf.listen, cert.Leaf.NotAfter.UTC().Format("2006-01-02"), cert.Fingerprint())
	return exitOK
}

// exportCert returns the certificate serve would present with these flags.
func (sf *serveFlags) exportCert(ctx context.Context, env *cmdEnv) (*tlscert.Cert, error) {
	if sf.tls.mode(sf.listen) == tlsNone {
		return nil, fmt.Errorf("the listener %s is plaintext only (--starttls=false): no certificate to export", sf.listen)
	}
	if sf.tls.cert != "" || sf.tls.key != "" {
		c, _, err := tlscert.LoadOrGenerate(sf.tls.cert, sf.tls.key)
		return c, err
	}
	if sf.noDecrypt {
		return nil, errors.New("without Vault (--no-decrypt) serve generates a new certificate at every start, which cannot be exported; give serve --tls-cert/--tls-key (and the same here)")
	}
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sf.vault.logger = logger
	store, err := sf.vault.openVault(ctx, env)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	_, cert, _, err := sf.clientTLS(ctx, store, logger)
	if err != nil {
		return nil, err
	}
	return cert, nil
}
