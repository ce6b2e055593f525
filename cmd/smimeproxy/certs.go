package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smimeproxy/smimeproxy/keystore"
)

// certsCommand is the 'certs' subcommand (main.go lists it).
func certsCommand() command {
	return commandGroup{name: "certs", summary: "manage a user's address book of correspondents' certificates in Vault: certs import|list|remove|trust", subs: []groupSub{
		{"import", "certs import --user U [--trust] [--roots CA.pem] FILE...   (PEM, DER .cer/.crt, PKCS #7 .p7b/.p7c)", runCertsImport},
		{"list", "certs list --user U [ADDRESS]", runCertsList},
		{"remove", "certs remove --user U ADDRESS FINGERPRINT | --all ADDRESS", runCertsRemove},
		{"trust", "certs trust --user U [--none] ADDRESS FINGERPRINT", runCertsTrust},
	}}.command()
}

func newCertsFlagSet(sub string, env *cmdEnv, usage string) (*flag.FlagSet, *keysFlags) {
	fs := flag.NewFlagSet("certs "+sub, flag.ContinueOnError)
	kf := &keysFlags{}
	fs.StringVar(&kf.user, "user", "", "the user (mail account) whose address book this is (required)")
	kf.vault = addVaultFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: "+usage)
		fs.PrintDefaults()
	}
	return fs, kf
}

// openBook connects to Vault and returns the user's address book and its release function.
func openBook(ctx context.Context, env *cmdEnv, kf *keysFlags) (keystore.AddressBook, func(), error) {
	s, err := kf.vault.openVault(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	return s.Contacts(), s.Close, nil
}

// importCert is one end-entity certificate to import, with the file it came from.
type importCert struct {
	file  string
	cert  *x509.Certificate
	trust string
}

func runCertsImport(ctx context.Context, env *cmdEnv, args []string) int {
	fs, kf := newCertsFlagSet("import", env, "smimeproxy certs import --user U [--trust] [--roots CA.pem] FILE...")
	trust := fs.Bool("trust", false, "mark the certificates trusted by the user (default: trusted only when they verify to a root)")
	roots := fs.String("roots", "", "PEM file of root CAs to verify the certificates against (default: the system's roots)")
	if code, ok := parseKeysFlags(fs, kf, env, args); !ok {
		return code
	}
	const name = "smimeproxy certs import"
	if fs.NArg() == 0 {
		fmt.Fprintf(env.stderr, "%s: no certificate files given (PEM, DER .cer/.crt, PKCS #7 .p7b/.p7c)\n", name)
		return exitError
	}
	// Parse and check everything before touching Vault, so a bad file imports nothing.
	certs, err := loadImportCerts(fs.Args(), *trust, *roots)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	book, release, err := openBook(ctx, env, kf)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	defer release()
	now := time.Now()
	code := exitOK
	for _, ic := range certs {
		stored, err := book.Add(ctx, kf.user, ic.cert, keystore.AddOptions{Trust: ic.trust, Source: keystore.SourceImport})
		for _, c := range stored {
			fmt.Fprintf(env.stdout, "imported %s for %s: %s, issuer %s, expires %s, trust %s\n", c.Fingerprint[:16], c.Address,
				c.Cert.Subject.CommonName, issuerName(c.Cert), c.Cert.NotAfter.UTC().Format(time.DateOnly), c.Trust)
		}
		if err != nil {
			fmt.Fprintf(env.stderr, "%s: %s: %v\n", name, ic.file, err)
			if !errors.Is(err, keystore.ErrBookFull) {
				return exitError
			}
			code = exitError
			continue
		}
		if now.After(ic.cert.NotAfter) {
			fmt.Fprintf(env.stderr, "%s: warning: certificate %s expired on %s; imported anyway (it verifies old signatures but is not used to encrypt)\n", name, keystore.Fingerprint(ic.cert)[:16], ic.cert.NotAfter.UTC().Format(time.DateOnly))
		}
	}
	return code
}

// loadImportCerts reads files and returns their end-entity certificates, each once, with the trust to store:
// TrustUser with --trust, else TrustChain when it verifies for email protection to roots (or the system's
// roots) through the CA certificates of all the files, else TrustNone. CA certificates are used as
// intermediates, not imported. An end-entity certificate without an email address is an error.
func loadImportCerts(files []string, trustAll bool, rootsFile string) ([]importCert, error) {
	var roots *x509.CertPool
	if rootsFile != "" {
		data, err := os.ReadFile(rootsFile)
		if err != nil {
			return nil, fmt.Errorf("--roots: %w", errors.Unwrap(err))
		}
		cas, err := keystore.ParseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("--roots %s: %w", rootsFile, err)
		}
		roots = x509.NewCertPool()
		for _, c := range cas {
			roots.AddCert(c)
		}
	}
	intermediates := x509.NewCertPool()
	var out []importCert
	seen := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, errors.Unwrap(err))
		}
		certs, err := keystore.ParseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		n := 0
		for _, c := range certs {
			if c.BasicConstraintsValid && c.IsCA {
				intermediates.AddCert(c)
				continue
			}
			n++
			fp := keystore.Fingerprint(c)
			if seen[fp] {
				continue
			}
			seen[fp] = true
			if len(keystore.CertAddresses(c)) == 0 {
				return nil, fmt.Errorf("%s: certificate %s (%s) has no email address (no subjectAltName rfc822Name or subject emailAddress), so it cannot go in the address book", f, fp[:16], c.Subject)
			}
			out = append(out, importCert{file: f, cert: c})
		}
		if n == 0 {
			return nil, fmt.Errorf("%s: only CA certificates, no correspondent's certificate", f)
		}
	}
	for i := range out {
		switch {
		case trustAll:
			out[i].trust = keystore.TrustUser
		case verifiesForEmail(out[i].cert, roots, intermediates):
			out[i].trust = keystore.TrustChain
		default:
			out[i].trust = keystore.TrustNone
		}
	}
	return out, nil
}

// verifiesForEmail reports whether cert chains to roots (nil: the system's) for email protection (RFC 5280
// section 4.2.1.12) now.
func verifiesForEmail(cert *x509.Certificate, roots, intermediates *x509.CertPool) bool {
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
	return err == nil
}

// issuerName is the issuer's common name, or its whole name when it has none.
func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}

func runCertsList(ctx context.Context, env *cmdEnv, args []string) int {
	fs, kf := newCertsFlagSet("list", env, "smimeproxy certs list --user U [ADDRESS]")
	if code, ok := parseKeysFlags(fs, kf, env, args); !ok {
		return code
	}
	const name = "smimeproxy certs list"
	if fs.NArg() > 1 {
		fmt.Fprintf(env.stderr, "%s: unexpected argument %q\n", name, fs.Arg(1))
		return exitError
	}
	book, release, err := openBook(ctx, env, kf)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	defer release()
	var cs []keystore.Contact
	if fs.NArg() == 1 {
		cs, err = book.Certificates(ctx, kf.user, fs.Arg(0))
	} else {
		cs, err = book.List(ctx, kf.user)
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	if len(cs) == 0 {
		fmt.Fprintf(env.stderr, "%s: no certificates in the address book of %s\n", name, kf.user)
		return exitOK
	}
	// Per address, the first line is the certificate used to encrypt (keystore.SortContacts).
	tw := tabwriter.NewWriter(env.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tFINGERPRINT (SHA-256)\tISSUER\tVALIDITY\tTRUST\tSOURCE")
	now := time.Now()
	for _, c := range cs {
		validity := c.Cert.NotBefore.UTC().Format(time.DateOnly) + ".." + c.Cert.NotAfter.UTC().Format(time.DateOnly)
		switch {
		case now.After(c.Cert.NotAfter):
			validity += " expired"
		case now.Before(c.Cert.NotBefore):
			validity += " not yet valid"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Address, c.Fingerprint, oneLineName(issuerName(c.Cert)), validity, c.Trust, c.Source)
	}
	tw.Flush()
	return exitOK
}

// oneLineName keeps a certificate name from breaking the table (names may hold tabs or newlines).
func oneLineName(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }), " ")
}

// resolveFingerprint finds the one certificate of address whose fingerprint starts with fp (at least 8 hex
// digits; colons and case as openssl prints them are accepted).
func resolveFingerprint(ctx context.Context, book keystore.AddressBook, user, address, fp string) (string, error) {
	want := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(fp), "sha256:"), ":", ""))
	if len(want) < 8 || len(want) > 64 || strings.Trim(want, "0123456789abcdef") != "" {
		return "", fmt.Errorf("invalid fingerprint %q: give at least 8 hex digits of the SHA-256 fingerprint 'certs list' prints", fp)
	}
	cs, err := book.Certificates(ctx, user, address)
	if err != nil {
		return "", err
	}
	var found []string
	for _, c := range cs {
		if strings.HasPrefix(c.Fingerprint, want) {
			found = append(found, c.Fingerprint)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w: %s has no certificate %s", keystore.ErrContactNotFound, address, fp)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("fingerprint %s names %d certificates of %s: give more digits", fp, len(found), address)
}

func runCertsRemove(ctx context.Context, env *cmdEnv, args []string) int {
	usage := "smimeproxy certs remove --user U ADDRESS FINGERPRINT | --all ADDRESS"
	fs, kf := newCertsFlagSet("remove", env, usage)
	all := fs.Bool("all", false, "remove every certificate of ADDRESS")
	if code, ok := parseKeysFlags(fs, kf, env, args); !ok {
		return code
	}
	const name = "smimeproxy certs remove"
	if (*all && fs.NArg() != 1) || (!*all && fs.NArg() != 2) {
		fmt.Fprintf(env.stderr, "%s: give ADDRESS FINGERPRINT, or --all ADDRESS (see 'smimeproxy certs list --user %s')\n", name, kf.user)
		return exitError
	}
	address := fs.Arg(0)
	book, release, err := openBook(ctx, env, kf)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	defer release()
	var fps []string
	if *all {
		cs, err := book.Certificates(ctx, kf.user, address)
		if err != nil {
			fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
			return exitError
		}
		if len(cs) == 0 {
			fmt.Fprintf(env.stderr, "%s: %s has no certificates for %s\n", name, kf.user, address)
			return exitError
		}
		for _, c := range cs {
			fps = append(fps, c.Fingerprint)
		}
	} else {
		fp, err := resolveFingerprint(ctx, book, kf.user, address, fs.Arg(1))
		if err != nil {
			fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
			return exitError
		}
		fps = []string{fp}
	}
	for _, fp := range fps {
		if err := book.Remove(ctx, kf.user, address, fp); err != nil {
			fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
			return exitError
		}
		fmt.Fprintf(env.stdout, "removed %s of %s for %s\n", fp[:16], address, kf.user)
	}
	return exitOK
}

func runCertsTrust(ctx context.Context, env *cmdEnv, args []string) int {
	usage := "smimeproxy certs trust --user U [--none] ADDRESS FINGERPRINT"
	fs, kf := newCertsFlagSet("trust", env, usage)
	none := fs.Bool("none", false, "withdraw trust instead (the certificate stays, marked untrusted)")
	if code, ok := parseKeysFlags(fs, kf, env, args); !ok {
		return code
	}
	const name = "smimeproxy certs trust"
	if fs.NArg() != 2 {
		fmt.Fprintf(env.stderr, "%s: give ADDRESS FINGERPRINT (see 'smimeproxy certs list --user %s')\n", name, kf.user)
		return exitError
	}
	trust := keystore.TrustUser
	if *none {
		trust = keystore.TrustNone
	}
	book, release, err := openBook(ctx, env, kf)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	defer release()
	fp, err := resolveFingerprint(ctx, book, kf.user, fs.Arg(0), fs.Arg(1))
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	c, err := book.SetTrust(ctx, kf.user, fs.Arg(0), fp, trust)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	fmt.Fprintf(env.stdout, "%s of %s for %s: trust %s\n", fp[:16], c.Address, kf.user, c.Trust)
	return exitOK
}
