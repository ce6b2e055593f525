package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/internal/observe"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// defaultServeListen is where serve listens for mail clients unless --listen says otherwise.
const defaultServeListen = "127.0.0.1:1143"

func init() {
	register(command{
		name:    "serve",
		summary: "run the IMAP proxy: mail clients connect here, mail stays on the upstream server",
		run:     runServe,
		flags:   func() *flag.FlagSet { fs, _ := newServeFlagSet(); return fs },
	})
}

type serveFlags struct {
	listen          string
	upstream        string
	upstreamCA      string
	allowPlaintext  bool
	tls             *tlsFlags
	observe         *observeFlags
	onListen        func(addr string) // tests: called with the bound address
	listenerWrapper func(net.Listener) net.Listener
}

func newServeFlagSet() (*flag.FlagSet, *serveFlags) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	s := &serveFlags{}
	fs.StringVar(&s.listen, "listen", defaultServeListen, "address mail clients connect to (host:port); a non-loopback address needs TLS (--tls-cert/--tls-key, else a generated certificate)")
	fs.StringVar(&s.upstream, "upstream", "", "upstream IMAP server: imaps://host[:993] (implicit TLS) or imap://host[:143] (STARTTLS)")
	fs.StringVar(&s.upstreamCA, "upstream-ca-file", "", "PEM file of CA certificates trusted for the upstream server, in addition to the system roots")
	fs.StringVar(&s.upstreamCA, "upstream-ca", "", "same as --upstream-ca-file")
	fs.BoolVar(&s.allowPlaintext, "allow-plaintext-upstream", false, "allow imap:// without STARTTLS to a non-loopback upstream (passwords and mail cross the network in clear)")
	s.tls = addTLSFlags(fs)
	s.observe = addObserveFlags(fs)
	return fs, s
}

// runServe serves until ctx ends (SIGINT, SIGTERM), then shuts down gracefully (running commands finish, clients
// get BYE).
func runServe(ctx context.Context, env *cmdEnv, args []string) int {
	fs, sf := newServeFlagSet()
	return sf.run(ctx, env, fs, args)
}

func (sf *serveFlags) run(ctx context.Context, env *cmdEnv, fs *flag.FlagSet, args []string) int {
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: smimeproxy serve --upstream imaps://imap.example.org [--listen 127.0.0.1:1143] [flags]")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, env, args); err != nil {
		if err == errHelp {
			return exitOK
		}
		return exitError
	}
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "smimeproxy serve: %v\n", err)
		return exitError
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if sf.upstream == "" {
		return fail(errors.New("no upstream: give --upstream imaps://host[:port] (or upstream = ... in the config file)"))
	}
	up := backend.Options{URL: sf.upstream, CAFile: sf.upstreamCA, AllowPlaintext: sf.allowPlaintext}
	t, err := backend.ParseURL(up.URL)
	if err != nil {
		return fail(err)
	}
	if !t.Implicit && !backend.IsLoopback(t.Host) && sf.allowPlaintext {
		fmt.Fprintf(env.stderr, "smimeproxy serve: warning: --allow-plaintext-upstream: %s may receive passwords in clear\n", t.Addr)
	}
	logger, err := sf.observe.logger(env)
	if err != nil {
		return fail(err)
	}
	metrics := observe.NewMetrics()
	stopHTTP, err := sf.observe.startHTTP(ctx, metrics, &observe.Health{}, logger)
	if err != nil {
		return fail(err)
	}
	defer stopHTTP()
	tlsConf, cert, generated, err := sf.tls.serverConfig(sf.listen)
	if err != nil {
		return fail(err)
	}
	srv, err := proxy.New(proxy.Options{Upstream: up, Logger: logger})
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", sf.listen)
	if err != nil {
		return fail(err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
		if generated {
			logger.Warn("generated a TLS certificate for clients; trust it in your mail client", "sha256", cert.Fingerprint())
		}
	}
	if sf.listenerWrapper != nil {
		ln = sf.listenerWrapper(ln)
	}
	logger.Info("serving", "listen", ln.Addr().String(), "upstream", t.Addr, "tls", tlsConf != nil)
	if sf.onListen != nil {
		sf.onListen(ln.Addr().String())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
		srv.Close()
		<-done
		return exitOK
	case err := <-done:
		srv.Close()
		return fail(err)
	}
}
