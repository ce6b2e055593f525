package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/smimeproxy/smimeproxy/demo"
	"github.com/smimeproxy/smimeproxy/internal/observe"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// demoCommand is the 'demo' subcommand (main.go lists it).
func demoCommand() command {
	return command{
		name:    "demo",
		summary: "run a self-contained demo: in-memory mail server with encrypted samples behind the proxy",
		run:     runDemo,
	}
}

// runDemo starts the demo and serves until ctx ends (Ctrl-C, SIGTERM); with --once it checks the demo through
// a real IMAP client and exits 0 (working) or 1.
func runDemo(ctx context.Context, env *cmdEnv, args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	listen := fs.String("listen", demo.DefaultListen, "proxy listen address (loopback only; a free port is used if it is busy)")
	submission := fs.String("submission-listen", demo.DefaultSubmissionListen, "submission (SMTP) listen address for sending signed and encrypted mail to yourself (loopback only; a free port is used if it is busy)")
	protect := fs.Bool("protect-subject", false, "RFC 9788 header protection of sent mail: the stored Subject is \"[...]\", the proxy shows the real one")
	useVault := fs.Bool("vault", false, "put the demo key into Vault (VAULT_ADDR, VAULT_TOKEN) instead of memory")
	once := fs.Bool("once", false, "start, fetch and verify the samples through the proxy, send a message and read it back, then exit (for CI)")
	fs.BoolVar(once, "check", false, "same as --once")
	of := addObserveFlags(fs)
	vf := addVaultFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: smimeproxy demo [--listen 127.0.0.1:1143] [--submission-listen 127.0.0.1:1587] [--protect-subject] [--vault] [--once]")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, env, args); err != nil {
		if err == errHelp {
			return exitOK
		}
		return exitError
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "smimeproxy demo: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	logger, err := of.logger(env)
	if err != nil {
		fmt.Fprintf(env.stderr, "smimeproxy demo: %v\n", err)
		return exitError
	}
	metrics := observe.NewMetrics()
	stopHTTP, err := of.startHTTP(ctx, metrics, &observe.Health{}, logger)
	if err != nil {
		fmt.Fprintf(env.stderr, "smimeproxy demo: %v\n", err)
		return exitError
	}
	defer stopHTTP()

	var store keystore.Store
	if *useVault {
		vf.logger = logger
		vf.metrics = metrics
		s, release, err := vf.open(ctx, env)
		if err != nil {
			fmt.Fprintf(env.stderr, "smimeproxy demo: %v\n", err)
			return exitError
		}
		defer release()
		store = s
	}
	d, err := demo.Start(ctx, demo.Options{Listen: *listen, Store: store, Logger: logger,
		Metrics: decryptMetrics{metrics}, SubmissionListen: *submission, ProtectSubject: *protect})
	if err != nil {
		fmt.Fprintf(env.stderr, "smimeproxy demo: %v\n", err)
		return exitError
	}
	defer d.Close()
	if *once {
		if err := d.Check(ctx); err != nil {
			fmt.Fprintf(env.stderr, "smimeproxy demo: %v\n", err)
			return exitError
		}
		fmt.Fprintf(env.stdout, "demo check passed: %d samples read through the proxy on %s; a message sent through %s read back decrypted, signature valid\n",
			len(demo.Samples), d.Addr(), d.SubmissionAddr())
		return exitOK
	}
	d.Instructions(env.stdout)
	<-ctx.Done()
	fmt.Fprintln(env.stderr, "smimeproxy demo: stopping")
	if err := d.Close(); err != nil {
		fmt.Fprintf(env.stderr, "smimeproxy demo: %v\n", err)
		return exitError
	}
	return exitOK
}

// decryptMetrics adapts observe.Metrics to decrypt.Metrics. Vault request failures are counted where they
// happen (vaultcfg.Config.Metrics), not per message served key-unavailable.
type decryptMetrics struct{ m *observe.Metrics }

func (a decryptMetrics) Decrypted()                  { a.m.Decrypted() }
func (a decryptMetrics) Undecryptable(reason string) { a.m.Undecryptable(reason) }
func (a decryptMetrics) CacheHit()                   { a.m.CacheHit() }
func (a decryptMetrics) CacheMiss()                  { a.m.CacheMiss() }
