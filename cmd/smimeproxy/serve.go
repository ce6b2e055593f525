package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/observe"
	"github.com/smimeproxy/smimeproxy/metastore"
	"github.com/smimeproxy/smimeproxy/proxy"
	"github.com/smimeproxy/smimeproxy/tlscert"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// defaultServeListen is where serve listens for mail clients unless --listen says otherwise.
const defaultServeListen = "127.0.0.1:1143"

// serveCommand is the 'serve' subcommand (main.go lists it).
func serveCommand() command {
	return command{
		name:    "serve",
		summary: "run the IMAP proxy: mail clients connect here, mail stays on the upstream server",
		run:     runServe,
		flags:   func() *flag.FlagSet { fs, _ := newServeFlagSet(); return fs },
	}
}

type serveFlags struct {
	listen          string
	upstream        string
	upstreamCA      string
	allowPlaintext  bool
	noDecrypt       bool
	encryptAppends  bool
	keyUserTemplate string
	cacheBytes      byteSize
	cacheMaxIdle    time.Duration
	metadataStore   string
	metadataBytes   byteSize
	caBundle        string
	harvestCerts    bool
	undecryptable   string // explain | original
	tls             *tlsFlags
	vault           *vaultFlags
	observe         *observeFlags
	submit          *submitFlags
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
	fs.BoolVar(&s.noDecrypt, "no-decrypt", false, "relay only: do not decrypt (no Vault needed); S/MIME mail reaches the client encrypted")
	fs.StringVar(&s.keyUserTemplate, "key-user-template", "{user}", "key set used for an IMAP login: {user} is the login name, {localpart} and {domain} its parts around the last @")
	s.cacheBytes = decrypt.DefaultCacheBytes
	fs.Var(&s.cacheBytes, "cache-bytes", "memory for decrypted messages kept for repeated fetches, e.g. 256MiB (0: none); never written to disk")
	fs.StringVar(&s.metadataStore, "metadata-store", defaultMetadataStore(), "directory of the metadata store (sizes, structures, envelopes and header fields of decrypted mail, sealed under a per-user key kept in Vault), so header syncs need no decryption after a restart; \"\": none")
	s.metadataBytes = metastore.DefaultMaxBytes
	fs.Var(&s.metadataBytes, "metadata-store-bytes", "bound of each user's metadata store, e.g. 256MiB (least recently used entries go first)")
	fs.DurationVar(&s.cacheMaxIdle, "cache-max-idle", decrypt.DefaultCacheMaxIdle, "a decrypted message not fetched again for this long is dropped from the cache (negative: no time limit)")
	fs.BoolVar(&s.encryptAppends, "encrypt-appends", true, encryptAppendsUsage)
	fs.StringVar(&s.caBundle, "ca-bundle", "", "PEM file of CA certificates trusted for S/MIME signatures, in addition to the system roots")
	fs.BoolVar(&s.harvestCerts, "harvest-certs", true, "add the certificate of every verified signer to the user's address book (trust chain or none)")
	fs.StringVar(&s.undecryptable, "undecryptable", undecryptableExplain, "how a message that cannot be decrypted is served: explain (a short text saying why, with the original attached as smime.p7m) or original (as stored, for clients that hold the key themselves)")
	s.tls = addTLSFlags(fs)
	s.vault = addVaultFlags(fs)
	s.observe = addObserveFlags(fs)
	s.submit = addSubmitFlags(fs)
	return fs, s
}

// Values of serve --undecryptable. explain is the default: the keys are in Vault, not in the client, so a
// client shown the original can only fail (Thunderbird's full-page "cannot decrypt" without the header pane,
// mutt's key prompt) and never sees the reason; original is for clients that also hold keys of their own.
const (
	undecryptableExplain  = "explain"
	undecryptableOriginal = "original"
)

// encryptAppendsUsage is the help of serve's and doctor's --encrypt-appends (one text, so that the example
// config file lists the key once for both).
const encryptAppendsUsage = "encrypt every message a client appends (drafts, sent copies, edited or forwarded decrypted mail) to the user's own certificates before it goes upstream (a user without one: plain mail is stored as sent, decrypted mail refused); false stores in clear all but copies still marked as decrypted"

// encryptAppendsOffWarning says what --encrypt-appends=false stores in clear (serve's log, doctor).
const encryptAppendsOffWarning = "encrypt-appends is off: drafts, sent copies, and decrypted messages that were edited, forwarded as attachments or quoted in replies are stored upstream in clear"

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
	if _, err := net.ResolveTCPAddr("tcp", sf.listen); err != nil {
		return fail(fmt.Errorf("--listen %q: %w", sf.listen, err))
	}
	keyUser, err := parseKeyUserTemplate(sf.keyUserTemplate)
	if err != nil {
		return fail(err)
	}
	if sf.undecryptable != undecryptableExplain && sf.undecryptable != undecryptableOriginal {
		return fail(fmt.Errorf("--undecryptable %q: want explain or original", sf.undecryptable))
	}
	metrics := observe.NewMetrics()
	health := &observe.Health{}
	opts := proxy.Options{Upstream: up, Logger: logger, Metrics: metrics}
	var store *vaultcfg.Store
	if !sf.noDecrypt {
		sf.vault.logger = logger
		sf.vault.metrics = metrics
		if store, err = sf.vault.openVault(ctx, env); err != nil {
			return fail(fmt.Errorf("%w (to relay without decrypting, give --no-decrypt)", err))
		}
		defer store.Close()
		health.AddCheck("vault", store.Ping)
		markerKey, err := store.MarkerKey(ctx)
		if err != nil {
			// Not fatal: a per-process key only means that copies served before a restart are re-encrypted
			// on APPEND instead of copied.
			logger.Warn("no APPEND-marker key in vault; using one for this process only (see 'smimeproxy keys policy')", "err", err)
			markerKey = nil
		}
		cas, err := readCABundle(sf.caBundle)
		if err != nil {
			return fail(err)
		}
		ms, err := sf.openMetadataStore(store, keyUser, logger)
		if err != nil && flagSet(fs, "metadata-store") {
			return fail(err)
		}
		if err != nil {
			// The default place is not writable (a read-only home or container): header syncs after a
			// restart decrypt again, nothing else changes. A store that was asked for must work.
			logger.Warn("no metadata store; give --metadata-store DIR or \"\" to silence this", "err", err)
			ms = nil
		}
		if ms != nil {
			defer ms.Close()
		}
		d, err := decrypt.New(decrypt.Options{MetaStore: ms, Store: store, CacheBytes: sf.cacheBytes.cache(), CacheMaxIdle: sf.cacheMaxIdle, Logger: logger,
			Metrics: decryptMetrics{metrics}, KeyUser: keyUser, MarkerKey: markerKey,
			Contacts: store.Contacts(), CAs: cas, NoHarvest: !sf.harvestCerts,
			ExplainUndecryptable: sf.undecryptable == undecryptableExplain})
		if err != nil {
			return fail(err)
		}
		// The Decrypter is the Rewriter and every one of its helpers (proxy/hooks.go).
		opts.Rewriter, opts.CandidateFilter, opts.CacheProbe, opts.DerivedCache = d, d, d, d
		opts.HeaderGuard, opts.AppendGuard, opts.TextMatcher, opts.HeaderMatcher = d, d, d, d
		opts.MetaSource, opts.MetaPruner, opts.IndexStore, opts.StoredText = d, d, d, d
		opts.EncryptAppends = sf.encryptAppends
		if !sf.encryptAppends {
			logger.Warn(encryptAppendsOffWarning)
		}
		metrics.CacheBytesFrom(func() int64 { _, n := d.CacheStats(); return n }) // read at every scrape
	} else if sf.encryptAppends && flagSet(fs, "encrypt-appends") {
		return fail(errors.New("--encrypt-appends needs the key store; it cannot be combined with --no-decrypt"))
	}
	health.AddCheck("upstream", func(ctx context.Context) error { return backend.Probe(ctx, up) })
	stopSubmit, err := sf.submit.start(store, keyUser, sf.upstreamCA, sf.allowPlaintext, logger)
	if err != nil {
		return fail(err)
	}
	defer stopSubmit()
	stopHTTP, err := sf.observe.startHTTP(ctx, metrics, health, logger)
	if err != nil {
		return fail(err)
	}
	defer stopHTTP()
	tlsConf, cert, generated, err := sf.clientTLSFor(ctx, store, logger)
	if err != nil {
		return fail(err)
	}
	opts.StartTLS = sf.tls.startTLSConfig(sf.listen, tlsConf)
	srv, err := proxy.New(opts)
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", sf.listen)
	if err != nil {
		return fail(err)
	}
	ln = sf.tls.listener(ln, sf.listen, tlsConf, cert, generated, logger)
	if sf.listenerWrapper != nil {
		ln = sf.listenerWrapper(ln)
	}
	logger.Info("serving", "listen", ln.Addr().String(), "upstream", t.Addr, "tls", sf.tls.mode(sf.listen).String(), "decrypt", !sf.noDecrypt)
	health.SetReady(true, "")
	if sf.onListen != nil {
		sf.onListen(ln.Addr().String())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
		health.SetReady(false, "shutting down")
		srv.Close()
		<-done
		return exitOK
	case err := <-done:
		srv.Close()
		return fail(err)
	}
}

// flagSet reports whether the flag name was set on the command line, from the environment or from the config
// file (parseFlags sets those with fs.Set), rather than left at its default.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// clientTLS is tlsFlags.serverConfig, except that a certificate generated for a listener (implicit TLS, or
// STARTTLS on loopback) is kept in Vault (vaultcfg.Store.WriteTLSCert, named after the listen host) and reused,
// so mail clients trust it once.
func (sf *serveFlags) clientTLS(ctx context.Context, store *vaultcfg.Store, logger *slog.Logger) (*tls.Config, *tlscert.Cert, bool, error) {
	if store == nil || sf.tls.cert != "" || sf.tls.key != "" || sf.tls.mode(sf.listen) == tlsNone {
		return sf.tls.serverConfig(sf.listen)
	}
	host, _, err := net.SplitHostPort(sf.listen)
	if err != nil {
		return nil, nil, false, fmt.Errorf("--listen %q: %w", sf.listen, err)
	}
	hosts := append([]string(nil), tlscert.DefaultHosts...)
	name := "default"
	if host != "" && host != "0.0.0.0" && host != "::" {
		if !slices.Contains(hosts, host) {
			hosts = append(hosts, host)
		}
		name = host
	}
	certPEM, keyPEM, err := store.ReadTLSCert(ctx, name)
	if err != nil {
		return nil, nil, false, fmt.Errorf("reading the client TLS certificate from vault: %w", err)
	}
	cert, generated, reason, err := tlscert.Ensure(certPEM, keyPEM, tlscert.Options{Hosts: hosts})
	if err != nil {
		return nil, nil, false, err
	}
	if generated {
		if err := store.WriteTLSCert(ctx, name, cert.CertPEM, cert.KeyPEM); err != nil {
			return nil, nil, false, fmt.Errorf("storing the client TLS certificate in vault: %w", err)
		}
		logger.Info("client TLS certificate generated and stored in vault", "name", name, "why", reason)
	}
	return tlscert.ServerConfig(cert), cert, generated, nil
}

// parseKeyUserTemplate returns the mapping from IMAP login to key-store user of --key-user-template: {user} is
// the login name; {localpart} and {domain} are the parts before and after its last "@" (empty domain without one).
func parseKeyUserTemplate(tmpl string) (func(string) string, error) {
	rest := tmpl
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("--key-user-template %q: unclosed {", tmpl)
		}
		switch rest[i : i+j+1] {
		case "{user}", "{localpart}", "{domain}":
		default:
			return nil, fmt.Errorf("--key-user-template %q: unknown placeholder %s (want {user}, {localpart} or {domain})", tmpl, rest[i:i+j+1])
		}
		rest = rest[i+j+1:]
	}
	if strings.TrimSpace(tmpl) == "" {
		return nil, errors.New("--key-user-template is empty")
	}
	if tmpl == "{user}" {
		return nil, nil
	}
	return func(login string) string {
		local, domain := login, ""
		if i := strings.LastIndexByte(login, '@'); i >= 0 {
			local, domain = login[:i], login[i+1:]
		}
		return strings.NewReplacer("{user}", login, "{localpart}", local, "{domain}", domain).Replace(tmpl)
	}, nil
}

// byteSize is a flag value for a number of bytes with an optional unit: 512, 64KiB, 256MiB, 1GiB, 100MB (powers of
// 1000 for kB/MB/GB, of 1024 for KiB/MiB/GiB).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("invalid size %q (want e.g. 256MiB)", s)
	}
	*b = byteSize(n * mult)
	return nil
}

// cache is the decrypt.Options.CacheBytes value: 0 on the command line means no cache (negative there).
func (b byteSize) cache() int64 {
	if b == 0 {
		return -1
	}
	return int64(b)
}

// readCABundle reads the certificates of --ca-bundle (PEM); none for an empty path. A file without any
// certificate is an error, so that a wrong path or format is not silently ignored.
func readCABundle(path string) ([]*x509.Certificate, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-bundle: %w", err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("--ca-bundle %s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--ca-bundle %s: no PEM certificate", path)
	}
	return out, nil
}
