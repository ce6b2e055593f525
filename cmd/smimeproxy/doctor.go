package main

//lint:file-ignore SA1019 S/MIME key transport is RSA PKCS #1 v1.5 for most senders (RFC 8551 section 2.3); decryption is constant-time with implicit rejection (crypto/cms keytrans.go)

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/internal/config"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/tlscert"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// doctorCommand is the 'doctor' subcommand (main.go lists it).
func doctorCommand() command {
	return command{
		name:    "doctor",
		summary: "check a setup (config, upstream IMAP, Vault, keys) and say what to fix",
		run:     runDoctor,
		flags:   func() *flag.FlagSet { fs, _ := newDoctorFlagSet(); return fs },
	}
}

// Defaults of doctor's checks.
const (
	// doctorTimeout bounds each network check (connect + TLS + greeting + CAPABILITY, or one Vault call).
	doctorTimeout = 15 * time.Second
	// doctorExpiryWarn: certificates expiring sooner than this are reported as warnings.
	doctorExpiryWarn = 30 * 24 * time.Hour
)

// doctorFlags are doctor's own flags. The upstream and client TLS flags have the names serve uses, so one
// config file serves both; doctor also reads the [serve] section for them (see applyServeSection).
type doctorFlags struct {
	upstream, upstreamCA string
	tls                  *tlsFlags
	user                 string
	keyUserTemplate      string
	timeout, expiryWarn  time.Duration
	encryptAppends       bool
	vault                *vaultFlags
	submissionUpstream   string
}

func newDoctorFlagSet() (*flag.FlagSet, *doctorFlags) {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	d := &doctorFlags{}
	fs.StringVar(&d.upstream, "upstream", "", "upstream IMAP server: imaps://host[:993] (implicit TLS) or imap://host[:143] (STARTTLS)")
	fs.StringVar(&d.upstreamCA, "upstream-ca-file", "", "PEM file of CA certificates trusted for the upstream server, in addition to the system roots")
	d.tls = addTLSFlags(fs)
	fs.StringVar(&d.user, "user", "", "check this user's keys in Vault (the mail account name)")
	fs.StringVar(&d.keyUserTemplate, "key-user-template", "{user}", "as serve's: which key set the login --user uses ({user}, {localpart}, {domain})")
	fs.DurationVar(&d.timeout, "timeout", doctorTimeout, "limit for each network check")
	fs.DurationVar(&d.expiryWarn, "expiry-warn", doctorExpiryWarn, "warn about certificates expiring within this time")
	fs.BoolVar(&d.encryptAppends, "encrypt-appends", true, encryptAppendsUsage)
	d.vault = addVaultFlags(fs)
	fs.StringVar(&d.submissionUpstream, "submission-upstream", "", "as serve's: the real submission server to check (smtps://host or smtp://host:587)")
	return fs, d
}

// checkStatus is the outcome of one check.
type checkStatus int

const (
	statusOK checkStatus = iota
	statusWarn
	statusFail
)

func (s checkStatus) String() string { return [...]string{"ok", "warn", "FAIL"}[s] }

// doctorReport prints one line per check: "ok|warn|FAIL  what  → how to fix".
type doctorReport struct {
	w            io.Writer
	fails, warns int
}

func (r *doctorReport) add(s checkStatus, what, fix string) {
	switch s {
	case statusFail:
		r.fails++
	case statusWarn:
		r.warns++
	}
	what = oneLine(what)
	if fix != "" && s != statusOK {
		fmt.Fprintf(r.w, "%-4s  %s  → %s\n", s, what, oneLine(fix))
	} else {
		fmt.Fprintf(r.w, "%-4s  %s\n", s, what)
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func runDoctor(ctx context.Context, env *cmdEnv, args []string) int {
	fs, d := newDoctorFlagSet()
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: smimeproxy doctor [--config FILE] [--upstream HOST:PORT] [--user USER] [flags]")
		fmt.Fprintln(env.stderr, "Checks the configuration serve would use and prints one line per check: ok, warn or FAIL, and how to fix it.")
		fmt.Fprintln(env.stderr, "Exit status 0 when nothing FAILed.")
		fs.PrintDefaults()
	}
	r := &doctorReport{w: env.stdout}
	if err := parseFlags(fs, env, args); err != nil {
		if errors.Is(err, errHelp) {
			return exitOK
		}
		r.add(statusFail, "config: "+err.Error(), "fix the file or flag named; 'smimeproxy config example' lists every key")
		return exitError
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "smimeproxy doctor: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	d.checkConfig(fs, env, r)
	d.checkClientTLS(r)
	d.checkAppends(r)
	d.checkUpstream(ctx, r)
	d.checkSubmission(r)
	d.checkVault(ctx, env, r)
	fmt.Fprintf(env.stdout, "\n%d failed, %d warnings\n", r.fails, r.warns)
	if r.fails > 0 {
		return exitError
	}
	return exitOK
}

// checkConfig reports the config file in use and applies its [serve] section to flags still unset.
func (d *doctorFlags) checkConfig(fs *flag.FlagSet, env *cmdEnv, r *doctorReport) {
	cf, err := findConfigFile(fs, env)
	if err != nil { // parseFlags loaded the same file without error; a race with an editor is the only way here
		r.add(statusFail, "config: "+err.Error(), "fix the file")
		return
	}
	if cf.file == nil {
		r.add(statusOK, "config: no file (built-in defaults, flags and SMIMEPROXY_* environment)", "")
		return
	}
	r.add(statusOK, "config: "+cf.path, "")
	if w, _ := cf.file.Validate(configSchema(fs)); len(w) > 0 {
		for _, m := range w {
			r.add(statusWarn, m, "check the key's spelling, or move it under the [command] that uses it")
		}
	}
	if err := applyServeSection(fs, cf.file); err != nil {
		r.add(statusFail, err.Error(), "fix the value in [serve]")
	}
}

// applyServeSection sets doctor's flags that nothing set (flag, env, [doctor] or top level) from the file's
// [serve] section, so doctor checks what serve would use.
func applyServeSection(fs *flag.FlagSet, f *config.File) error {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var err error
	fs.VisitAll(func(fl *flag.Flag) {
		if err != nil || set[fl.Name] || fl.Name == config.ConfigFlag {
			return
		}
		for _, e := range f.Entries("serve") {
			if e.Key != fl.Name {
				continue
			}
			for _, v := range e.Values {
				if se := fs.Set(fl.Name, v); se != nil {
					err = fmt.Errorf("config: %s:%d: invalid value for %q: %v", f.Path, e.Line, fl.Name, se)
					return
				}
			}
		}
	})
	return err
}

// checkAppends reports serve's encrypt-appends setting (flag, SMIMEPROXY_ENCRYPT_APPENDS, or the config file's
// [serve] section or top level).
func (d *doctorFlags) checkAppends(r *doctorReport) {
	if d.encryptAppends {
		r.add(statusOK, "appends: encrypted to the user's own certificate before they go upstream (encrypt-appends)", "")
		return
	}
	r.add(statusWarn, "appends: "+encryptAppendsOffWarning, "remove encrypt-appends = false (or --encrypt-appends=false, SMIMEPROXY_ENCRYPT_APPENDS) unless the upstream server may hold plaintext")
}

// checkClientTLS checks the certificate the proxy presents to mail clients, when files are configured.
func (d *doctorFlags) checkClientTLS(r *doctorReport) {
	if d.tls.cert == "" && d.tls.key == "" {
		r.add(statusOK, "client TLS: no certificate files (plaintext on loopback; serve generates a certificate when it needs TLS)", "")
		return
	}
	c, _, err := tlscert.LoadOrGenerate(d.tls.cert, d.tls.key)
	if err != nil {
		r.add(statusFail, "client TLS: "+err.Error(), "give a matching PEM certificate (--tls-cert) and key (--tls-key), or neither")
		return
	}
	d.reportExpiry(r, "client TLS certificate "+d.tls.cert, c.Leaf, "renew it (or remove tls-cert/tls-key to use a generated one)")
}

func (d *doctorFlags) reportExpiry(r *doctorReport, what string, cert *x509.Certificate, fix string) {
	now := time.Now()
	until := cert.NotAfter.UTC().Format("2006-01-02")
	switch {
	case now.After(cert.NotAfter):
		r.add(statusFail, fmt.Sprintf("%s expired on %s", what, until), fix)
	case now.Before(cert.NotBefore):
		r.add(statusFail, fmt.Sprintf("%s is not valid before %s", what, cert.NotBefore.UTC().Format("2006-01-02")), "check this machine's clock")
	case cert.NotAfter.Sub(now) < d.expiryWarn:
		r.add(statusWarn, fmt.Sprintf("%s expires on %s (in %d days)", what, until, int(cert.NotAfter.Sub(now).Hours()/24)), fix)
	default:
		r.add(statusOK, fmt.Sprintf("%s valid until %s", what, until), "")
	}
}

// checkUpstream connects to the upstream server as serve would (backend.Dial does the same steps without
// reporting each): TCP; then for imaps:// a TLS handshake (RFC 8314
// section 3.2) before the greeting, for imap:// the greeting and CAPABILITY in plaintext and STARTTLS (RFC 9051
// section 6.2.1) when offered, on a second connection; then the greeting (RFC 9051 section 7.1) and CAPABILITY
// (section 6.1.1) over TLS.
func (d *doctorFlags) checkUpstream(ctx context.Context, r *doctorReport) {
	if d.upstream == "" {
		r.add(statusFail, "upstream: not configured", `set upstream = "imaps://imap.example.org" in the config file, SMIMEPROXY_UPSTREAM or --upstream`)
		return
	}
	t, err := backend.ParseURL(d.upstream) // exactly as serve parses it
	if err != nil {
		r.add(statusFail, err.Error(), "write the upstream as imaps://host[:port] (implicit TLS) or imap://host[:port] (STARTTLS)")
		return
	}
	tlsConf := &tls.Config{ServerName: t.Host, MinVersion: tls.VersionTLS12}
	if d.upstreamCA != "" {
		pem, err := os.ReadFile(d.upstreamCA)
		if err != nil {
			r.add(statusFail, "upstream CA file: "+err.Error(), "fix --upstream-ca-file")
			return
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			r.add(statusFail, "upstream CA file "+d.upstreamCA+": no PEM certificate in it", "give a PEM file with the CA certificate(s)")
			return
		}
		tlsConf.RootCAs = pool
	}
	var state *tls.ConnectionState
	tlsConf.VerifyConnection = func(cs tls.ConnectionState) error { state = &cs; return nil }
	tlsFix := "if the server uses a private CA, give its certificate with --upstream-ca-file; use imaps:// for implicit TLS (usually port 993), imap:// for STARTTLS (port 143)"

	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	dial := func() (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(cctx, "tcp", t.Addr)
		if err != nil {
			return nil, err
		}
		_ = conn.SetDeadline(time.Now().Add(d.timeout))
		context.AfterFunc(cctx, func() { conn.Close() })
		return conn, nil
	}
	conn, err := dial()
	if err != nil {
		r.add(statusFail, fmt.Sprintf("upstream %s: cannot connect: %v", t.Addr, err), "check the host name and port, and that this machine may reach it (firewall, VPN)")
		return
	}
	reached := ""
	if net.ParseIP(t.Host) == nil {
		reached = " at " + conn.RemoteAddr().String()
	}
	r.add(statusOK, fmt.Sprintf("upstream %s: reachable%s", t.Addr, reached), "")

	opts := &imapclient.Options{TLSConfig: tlsConf}
	var c *imapclient.Client
	if t.Implicit {
		tc := tls.Client(conn, tlsConf)
		if err := tc.HandshakeContext(cctx); err != nil {
			conn.Close()
			fix := tlsFix
			if strings.Contains(err.Error(), "does not look like a TLS handshake") {
				fix = "this port speaks plaintext IMAP: use imap://" + t.Addr + " (STARTTLS)"
			}
			r.add(statusFail, fmt.Sprintf("upstream %s: TLS handshake: %v", t.Addr, err), fix)
			return
		}
		c = imapclient.New(tc, opts)
	} else {
		// Plaintext first: what does the server offer before TLS?
		plain := imapclient.New(conn, opts)
		caps, err := greetAndCaps(plain)
		plain.Close()
		if err != nil {
			r.add(statusFail, fmt.Sprintf("upstream %s: %v", t.Addr, err), "check that this port serves IMAP; for implicit TLS (usually port 993) use imaps://")
			return
		}
		if !caps.Has(imap.CapStartTLS) {
			if !tlscert.IsLoopback(t.Addr) {
				r.add(statusFail, fmt.Sprintf("upstream %s: no STARTTLS offered: passwords and mail would cross the network in clear", t.Addr), "use imaps:// (implicit TLS) if the server has it; serve refuses plaintext to a remote server")
				return
			}
			r.add(statusOK, fmt.Sprintf("upstream %s: plaintext on loopback (no STARTTLS offered)", t.Addr), "")
			d.reportCaps(r, t.Addr, caps)
			return
		}
		if conn, err = dial(); err != nil {
			r.add(statusFail, fmt.Sprintf("upstream %s: cannot connect again: %v", t.Addr, err), "check the server's connection limits")
			return
		}
		if c, err = imapclient.NewStartTLS(conn, opts); err != nil {
			conn.Close()
			r.add(statusFail, fmt.Sprintf("upstream %s: STARTTLS: %v", t.Addr, err), tlsFix)
			return
		}
	}
	defer c.Close()
	mode := "STARTTLS"
	if t.Implicit {
		mode = "implicit TLS"
	}
	if state != nil {
		r.add(statusOK, fmt.Sprintf("upstream %s: %s, %s", t.Addr, mode, tlsVersionName(state.Version)), "")
		if len(state.PeerCertificates) > 0 {
			d.reportExpiry(r, "upstream certificate for "+t.Host, state.PeerCertificates[0], "tell the mail server's operator")
		}
	}
	caps, err := greetAndCaps(c)
	if err != nil {
		r.add(statusFail, fmt.Sprintf("upstream %s: %v", t.Addr, err), "check that this port serves IMAP")
		return
	}
	d.reportCaps(r, t.Addr, caps)
	_ = c.Logout().Wait()
}

// greetAndCaps waits for the greeting and asks for CAPABILITY.
func greetAndCaps(c *imapclient.Client) (imap.CapSet, error) {
	if err := c.WaitGreeting(); err != nil {
		return nil, fmt.Errorf("no IMAP greeting: %w", err)
	}
	caps, err := c.Capability().Wait()
	if err != nil {
		return nil, fmt.Errorf("CAPABILITY failed: %w", err)
	}
	return caps, nil
}

func (d *doctorFlags) reportCaps(r *doctorReport, addr string, caps imap.CapSet) {
	names := make([]string, 0, len(caps))
	for cp := range caps {
		names = append(names, string(cp))
	}
	sort.Strings(names)
	switch {
	case !caps.Has(imap.CapIMAP4rev1) && !caps.Has(imap.CapIMAP4rev2):
		r.add(statusFail, fmt.Sprintf("upstream %s: neither IMAP4rev1 nor IMAP4rev2 in CAPABILITY %s", addr, strings.Join(names, " ")), "point upstream at an IMAP server")
	case caps.Has(imap.CapLoginDisabled):
		r.add(statusFail, fmt.Sprintf("upstream %s: LOGINDISABLED: the server refuses logins on this connection", addr), "use TLS: imaps:// or a server that offers STARTTLS")
	default:
		r.add(statusOK, fmt.Sprintf("upstream %s: CAPABILITY %s", addr, strings.Join(names, " ")), "")
	}
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLS 1.3"
	case tls.VersionTLS12:
		return "TLS 1.2"
	}
	return fmt.Sprintf("TLS version %#x", v)
}

// checkVault opens the key store as serve would (address, TLS, token or AppRole login) and, with --user, checks
// that user's keys: present, usable (an RSA round trip through the key, in Vault for Transit keys) and not
// expiring.
func (d *doctorFlags) checkVault(ctx context.Context, env *cmdEnv, r *doctorReport) {
	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	store, release, err := d.vault.open(cctx, env)
	if err != nil {
		what, fix := vaultProblem(err)
		r.add(statusFail, "vault: "+what, fix)
		return
	}
	defer release()
	r.add(statusOK, "vault: connected and logged in", "")
	if vs, ok := store.(*vaultcfg.Store); ok {
		if _, err := vs.MarkerKey(cctx); err != nil {
			what, _ := vaultProblem(err)
			r.add(statusWarn, "vault: no APPEND-marker key for the proxy: "+what,
				"give the proxy's token the policy printed by 'smimeproxy keys policy' (without it, copies served before a restart are re-encrypted on APPEND instead of copied)")
		} else {
			r.add(statusOK, "vault: APPEND-marker key present", "")
		}
	}
	if d.user == "" {
		r.add(statusWarn, "keys: not checked (no user given)", "run 'smimeproxy doctor --user YOUR-MAIL-LOGIN'")
		return
	}
	keyUser, err := parseKeyUserTemplate(d.keyUserTemplate)
	if err != nil {
		r.add(statusFail, "keys: "+err.Error(), "fix --key-user-template (also in the config file's [serve] section)")
		return
	}
	if keyUser != nil {
		login := d.user
		d.user = keyUser(login)
		r.add(statusOK, fmt.Sprintf("keys: login %s uses the key set %s (--key-user-template %s)", login, d.user, d.keyUserTemplate), "")
	}
	entries, err := store.List(cctx, d.user)
	if err != nil {
		what, fix := vaultProblem(err)
		r.add(statusFail, fmt.Sprintf("keys of %s: %s", d.user, what), fix)
		return
	}
	if len(entries) == 0 {
		r.add(statusFail, fmt.Sprintf("keys of %s: none in Vault", d.user), fmt.Sprintf("import your S/MIME key: smimeproxy keys import --user %s --password-env P12_PASSWORD your-key.p12", d.user))
		return
	}
	canEncrypt := false
	for _, e := range entries {
		if d.checkKey(cctx, store, e, r) {
			canEncrypt = true
		}
	}
	if d.encryptAppends && !canEncrypt {
		r.add(statusWarn, fmt.Sprintf("keys of %s: no RSA certificate to encrypt appended messages to: decrypted copies are refused on APPEND, other messages are stored in clear", d.user),
			"import an RSA S/MIME key and certificate of yours with smimeproxy keys import")
	}
}

// checkKey reports one key: a decryption self-test and its certificate's expiry. It returns whether serve can
// encrypt appended messages to the key's certificate (RSA, readable).
func (d *doctorFlags) checkKey(ctx context.Context, store keystore.Store, e keystore.Entry, r *doctorReport) bool {
	name := fmt.Sprintf("key %s of %s (%s, %s)", e.ID, d.user, strings.Join(e.Emails, ", "), e.Storage)
	ids := make([]cms.RecipientID, 0, len(e.RecipientIDs))
	for _, s := range e.RecipientIDs {
		if id, ok := cms.ParseRecipientKey(s); ok {
			ids = append(ids, id)
		}
	}
	keys, err := store.Lookup(ctx, d.user, ids)
	var key *keystore.Key
	for i := range keys {
		if keys[i].ID == e.ID {
			key = &keys[i]
		}
	}
	switch {
	case err != nil:
		what, fix := vaultProblem(err)
		r.add(statusFail, name+": cannot be read: "+what, fix)
		return false
	case key == nil:
		r.add(statusFail, name+": listed but not found by its recipient identifiers", "re-import it with smimeproxy keys import")
		return false
	}
	if err := selfTest(key); err != nil {
		what, fix := vaultProblem(err)
		r.add(statusFail, name+": decryption self-test failed: "+what, fix)
	} else {
		r.add(statusOK, name+": decryption self-test passed", "")
	}
	now := time.Now()
	until := e.NotAfter.UTC().Format("2006-01-02")
	switch {
	case now.After(e.NotAfter):
		// Expired keys still decrypt old mail: keep them, but new mail needs a new certificate.
		r.add(statusWarn, fmt.Sprintf("%s: certificate expired on %s (still decrypts old mail)", name, until), "get a new certificate and import it with smimeproxy keys import; keep this key for old mail")
	case e.NotAfter.Sub(now) < d.expiryWarn:
		r.add(statusWarn, fmt.Sprintf("%s: certificate expires on %s (in %d days)", name, until, int(e.NotAfter.Sub(now).Hours()/24)), "renew the certificate and import the new one with smimeproxy keys import")
	default:
		r.add(statusOK, fmt.Sprintf("%s: certificate valid until %s", name, until), "")
	}
	return key.Cert != nil && key.Cert.PublicKeyAlgorithm == x509.RSA
}

// selfTest proves a key usable: for RSA, a random 32-byte secret encrypted to the certificate (PKCS #1 v1.5,
// RFC 8017 section 7.2, as most S/MIME mail uses) must decrypt back through the key (which asks Vault Transit
// for Transit keys); for EC, the private key must match the certificate.
func selfTest(k *keystore.Key) error {
	switch pub := k.Cert.PublicKey.(type) {
	case *rsa.PublicKey:
		dec, ok := k.Private.(crypto.Decrypter)
		if !ok {
			return fmt.Errorf("private key of type %T cannot decrypt", k.Private)
		}
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return err
		}
		ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, secret)
		if err != nil {
			return err
		}
		pt, err := dec.Decrypt(rand.Reader, ct, &rsa.PKCS1v15DecryptOptions{SessionKeyLen: len(secret)})
		if err != nil {
			return err
		}
		if !bytes.Equal(pt, secret) {
			return errors.New("the private key does not match the certificate")
		}
		return nil
	case *ecdsa.PublicKey:
		p, ok := k.Private.(interface{ Public() crypto.PublicKey })
		if !ok {
			return fmt.Errorf("private key of type %T has no public key", k.Private)
		}
		eq, ok := p.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok {
			return fmt.Errorf("public key of type %T cannot be compared", p.Public())
		}
		if eq.Equal(pub) {
			return nil
		}
		if epub, err := pub.ECDH(); err == nil && eq.Equal(epub) {
			return nil
		}
		return errors.New("the private key does not match the certificate")
	}
	if k.Private == nil {
		return errors.New("no private key")
	}
	return nil // X25519/X448: present; no generic self-test
}

// vaultProblem turns a Vault error into what went wrong and how to fix it.
func vaultProblem(err error) (what, fix string) {
	what = err.Error()
	switch {
	case errors.Is(err, vaultcfg.ErrUnreachable):
		return what, "start Vault or fix vault-addr / VAULT_ADDR (and vault-cacert for a private CA)"
	case errors.Is(err, vaultcfg.ErrSealed):
		return what, "unseal Vault: vault operator unseal"
	case errors.Is(err, vaultcfg.ErrPermissionDenied):
		return what, "log in again (vault login) or fix the AppRole; 'smimeproxy keys policy' prints the policy the token needs"
	case errors.Is(err, vaultcfg.ErrMountNotFound):
		return what, "enable the engine (vault secrets enable -path=secret kv-v2, vault secrets enable transit) or set vault-kv-mount / vault-transit-mount"
	case errors.Is(err, context.DeadlineExceeded):
		return what, "Vault is slow or unreachable; check the address, or raise --timeout"
	case strings.Contains(what, "no vault address"):
		return what, "set vault-addr in the config file, or VAULT_ADDR"
	}
	return what, "see the message; 'smimeproxy keys list --user USER' shows the same store"
}
