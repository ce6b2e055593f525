package main

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// keysCommand is the 'keys' subcommand (main.go lists it).
func keysCommand() command {
	return commandGroup{name: "keys", summary: "manage users' S/MIME keys in Vault: keys import|list|remove|policy", subs: []groupSub{
		{"import", "keys import --user U [--transit] [--password-env VAR | --password-file F] FILE...", runKeysImport},
		{"list", "keys list --user U", runKeysList},
		{"remove", "keys remove --user U ID", runKeysRemove},
		{"policy", "keys policy [--user U | --templated [--user U] | --admin]   (prints a Vault policy; see keys policy -h)", runKeysPolicy},
	}}.command()
}

// keysFlags are the flags every keys subcommand has.
type keysFlags struct {
	user  string
	vault *vaultFlags
}

func newKeysFlagSet(sub string, env *cmdEnv, usage string) (*flag.FlagSet, *keysFlags) {
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	kf := &keysFlags{}
	fs.StringVar(&kf.user, "user", "", "the user (mail account) whose keys these are (required)")
	kf.vault = addVaultFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: "+usage)
		fs.PrintDefaults()
	}
	return fs, kf
}

// parseKeysFlags parses and checks --user; it returns the exit code to use when ok is false.
func parseKeysFlags(fs *flag.FlagSet, kf *keysFlags, env *cmdEnv, args []string) (code int, ok bool) {
	if err := parseFlags(fs, env, args); err != nil {
		if err == errHelp {
			return exitOK, false
		}
		return exitError, false
	}
	if kf.user == "" {
		fmt.Fprintf(env.stderr, "smimeproxy %s: --user is required\n", fs.Name())
		return exitError, false
	}
	if err := vaultcfg.ValidateUser(kf.user); err != nil {
		fmt.Fprintf(env.stderr, "smimeproxy %s: %v\n", fs.Name(), err)
		return exitError, false
	}
	return 0, true
}

// keyPair is one private key with its certificate chain, from the files given to keys import.
type keyPair struct {
	file  string
	chain []*x509.Certificate
	key   crypto.PrivateKey
}

func runKeysImport(ctx context.Context, env *cmdEnv, args []string) int {
	fs, kf := newKeysFlagSet("import", env, "smimeproxy keys import --user U [--transit] [--password-env VAR | --password-file F] FILE...")
	transit := fs.Bool("transit", false, "import RSA keys into Vault Transit (decryption happens in Vault; KV keeps only the certificate)")
	pwEnv := fs.String("password-env", "", "name of the environment variable holding the PKCS#12 or PEM password")
	pwFile := fs.String("password-file", "", "file holding the PKCS#12 or PEM password (first line)")
	if code, ok := parseKeysFlags(fs, kf, env, args); !ok {
		return code
	}
	const name = "smimeproxy keys import"
	if fs.NArg() == 0 {
		fmt.Fprintf(env.stderr, "%s: no key files given (PKCS#12, or PEM with key and certificate in one file or two)\n", name)
		return exitError
	}
	password, err := readPassword(env, *pwEnv, *pwFile)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	defer clear(password)
	// Parse everything before touching Vault, so a bad file imports nothing.
	pairs, err := loadKeyPairs(fs.Args(), password)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	if *transit {
		for _, p := range pairs {
			if _, ok := p.key.(*rsa.PrivateKey); !ok {
				fmt.Fprintf(env.stderr, "%s: %s: --transit needs an RSA key, this is %s: Vault Transit has no ECDH, so EC keys must be imported without --transit (they are kept in KV)\n", name, p.file, keyKind(p.key))
				return exitError
			}
		}
	}
	store, err := kf.vault.openVault(ctx, env)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	defer store.Close()
	now := time.Now()
	for i, p := range pairs {
		if len(pairs) > 1 { // progress for bulk imports (a Transit import takes several round trips)
			fmt.Fprintf(env.stderr, "%s: [%d/%d] %s\n", name, i+1, len(pairs), p.file)
		}
		e, err := store.Put(ctx, kf.user, p.chain, p.key, keystore.PutOptions{Transit: *transit})
		if err != nil {
			fmt.Fprintf(env.stderr, "%s: %s: %v", name, p.file, err)
			if i > 0 {
				fmt.Fprintf(env.stderr, " (the %d key(s) listed above were imported; re-running is safe: imports are idempotent)", i)
			}
			fmt.Fprintln(env.stderr)
			return exitError
		}
		fmt.Fprintf(env.stdout, "imported %s for %s: %s", e.ID, kf.user, e.Subject)
		if len(e.Emails) > 0 {
			fmt.Fprintf(env.stdout, " <%s>", strings.Join(e.Emails, ", "))
		}
		fmt.Fprintf(env.stdout, ", expires %s, %s key, storage %s\n", e.NotAfter.UTC().Format(time.DateOnly), keyKind(p.key), e.Storage)
		if now.After(e.NotAfter) {
			fmt.Fprintf(env.stderr, "%s: warning: certificate %s expired on %s; imported anyway so that old mail stays readable\n", name, e.ID, e.NotAfter.UTC().Format(time.DateOnly))
		} else if now.Before(e.NotBefore) {
			fmt.Fprintf(env.stderr, "%s: warning: certificate %s is not valid before %s\n", name, e.ID, e.NotBefore.UTC().Format(time.DateOnly))
		}
	}
	if *transit {
		fmt.Fprintf(env.stderr, "%s: note: keys in Transit decrypt RSA PKCS #1 v1.5 and RSA-OAEP with SHA-256 only; mail encrypted with RSA-OAEP SHA-1 needs the key in KV (import without --transit)\n", name)
	}
	return exitOK
}

// readPassword returns the password from the environment variable named envName or the first line of file;
// none is an empty password.
func readPassword(env *cmdEnv, envName, file string) ([]byte, error) {
	switch {
	case envName != "" && file != "":
		return nil, errors.New("give only one of --password-env and --password-file")
	case envName != "":
		v := env.getenv(envName)
		if v == "" {
			return nil, fmt.Errorf("environment variable %s (--password-env) is empty or not set", envName)
		}
		return []byte(v), nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("reading the password file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		clear(b)
		return []byte(strings.TrimSuffix(line, "\r")), nil
	}
	return nil, nil
}

// loadKeyPairs parses files: each one holding a key and its certificate (PKCS#12, or PEM with both) is one
// key pair (keystore.ParseKeyFile); when some file holds only a key or only certificates, all files together
// must make one key pair (keystore.MergeKeyFiles, e.g. key.pem cert.pem).
func loadKeyPairs(files []string, password []byte) ([]keyPair, error) {
	datas := make([][]byte, len(files))
	defer func() {
		for _, d := range datas {
			clear(d)
		}
	}()
	for i, f := range files {
		d, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, errors.Unwrap(err))
		}
		datas[i] = d
	}
	var pairs []keyPair
	split := false
	for i, d := range datas {
		chain, key, err := keystore.ParseKeyFile(d, password)
		if errors.Is(err, keystore.ErrNoCertificate) || errors.Is(err, keystore.ErrNoPrivateKey) {
			split = true
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", files[i], err)
		}
		pairs = append(pairs, keyPair{file: files[i], chain: chain, key: key})
	}
	if !split {
		return pairs, nil
	}
	name := strings.Join(files, " + ")
	if len(pairs) > 0 {
		return nil, fmt.Errorf("%s: some files hold a complete key and others only a key or only certificates: import them separately", name)
	}
	chain, key, err := keystore.MergeKeyFiles(datas, password)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return []keyPair{{file: name, chain: chain, key: key}}, nil
}

// keyKind names a private key's algorithm for messages.
func keyKind(key crypto.PrivateKey) string {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PrivateKey:
		return "EC " + k.Curve.Params().Name
	case *ecdh.PrivateKey:
		return fmt.Sprint(k.Curve())
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", key), "*")
}

func runKeysList(ctx context.Context, env *cmdEnv, args []string) int {
	fs, kf := newKeysFlagSet("list", env, "smimeproxy keys list --user U")
	if code, ok := parseKeysFlags(fs, kf, env, args); !ok {
		return code
	}
	const name = "smimeproxy keys list"
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		return exitError
	}
	store, release, err := kf.vault.open(ctx, env)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	defer release()
	entries, err := store.List(ctx, kf.user)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	if len(entries) == 0 {
		fmt.Fprintf(env.stderr, "%s: no keys for %s\n", name, kf.user)
		return exitOK
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 8, 2, ' ', 0)
	now := time.Now()
	for _, e := range entries {
		who := e.Subject
		if len(e.Emails) > 0 {
			who = strings.Join(e.Emails, ",")
		}
		state := ""
		if now.After(e.NotAfter) {
			state = "\texpired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\n", e.ID, who, e.NotAfter.UTC().Format(time.DateOnly), e.Storage, state)
	}
	tw.Flush()
	return exitOK
}

func runKeysRemove(ctx context.Context, env *cmdEnv, args []string) int {
	fs, kf := newKeysFlagSet("remove", env, "smimeproxy keys remove --user U ID")
	if code, ok := parseKeysFlags(fs, kf, env, args); !ok {
		return code
	}
	const name = "smimeproxy keys remove"
	if fs.NArg() != 1 {
		fmt.Fprintf(env.stderr, "%s: give exactly one key ID (see 'smimeproxy keys list --user %s')\n", name, kf.user)
		return exitError
	}
	id := fs.Arg(0)
	store, release, err := kf.vault.open(ctx, env)
	if err != nil {
		fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		return exitError
	}
	defer release()
	if err := store.Remove(ctx, kf.user, id); err != nil {
		if errors.Is(err, keystore.ErrNotFound) {
			fmt.Fprintf(env.stderr, "%s: %s has no key %s\n", name, kf.user, id)
		} else {
			fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
		}
		return exitError
	}
	fmt.Fprintf(env.stdout, "removed %s for %s\n", id, kf.user)
	return exitOK
}

// runKeysPolicy prints a Vault policy (HCL) for the configured mounts and prefix: what a proxy for all users
// needs, with --user what one user's own proxy needs, with --templated one policy for every user's own proxy
// (and with --templated --user the entity metadata for that user), or with --admin what keys
// import/list/remove need. It does not contact Vault.
func runKeysPolicy(ctx context.Context, env *cmdEnv, args []string) int {
	fs := flag.NewFlagSet("keys policy", flag.ContinueOnError)
	admin := fs.Bool("admin", false, "the policy for keys import/list/remove (the key manager's token only; no proxy needs it)")
	user := fs.String("user", "", "the policy of this one user's own proxy (serve --vault-user U): only U's keys, Transit keys and proxy state")
	templated := fs.Bool("templated", false, "one policy for every user's own proxy, filled in by Vault from the token's entity metadata; with --user, print the metadata U's entity needs instead")
	vf := addVaultFlags(fs)
	fs.Usage = func() {
		w := env.stderr
		fmt.Fprintln(w, "usage: smimeproxy keys policy [--user U | --templated [--user U] | --admin] [--vault-kv-mount M] [--vault-prefix P] [--vault-transit-mount T]")
		fmt.Fprintln(w, "\nWhich token each workstation gets:")
		fmt.Fprintln(w, "  a workstation's own proxy (serve --vault-user U): a token with 'keys policy --user U', or with the one")
		fmt.Fprintln(w, "      'keys policy --templated' policy and entity metadata from 'keys policy --templated --user U';")
		fmt.Fprintln(w, "      it reaches U's keys only")
		fmt.Fprintln(w, "  a proxy serving all users on one shared host: 'keys policy' (reads every user's private keys)")
		fmt.Fprintln(w, "  whoever runs keys import/list/remove: 'keys policy --admin'; never give it to a proxy")
		fmt.Fprintln(w)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, env, args); err != nil {
		if err == errHelp {
			return exitOK
		}
		return exitError
	}
	const name = "smimeproxy keys policy"
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		return exitError
	}
	if *admin && (*user != "" || *templated) {
		fmt.Fprintf(env.stderr, "%s: --admin cannot be combined with --user or --templated\n", name)
		return exitError
	}
	cfg := vaultcfg.Config{KVMount: vf.kvMount, Prefix: vf.prefix, TransitMount: vf.transitMount}
	switch {
	case *admin:
		fmt.Fprint(env.stdout, vaultcfg.AdminPolicy(cfg))
	case *templated && *user != "":
		md, err := vaultcfg.EntityMetadata(*user)
		if err != nil {
			fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
			return exitError
		}
		// The arguments of `vault write identity/entity/name/<entity> ...` (it replaces the entity's metadata).
		fmt.Fprintf(env.stdout, "metadata=%s=%s metadata=%s=%s\n", vaultcfg.MetadataUser, md[vaultcfg.MetadataUser],
			vaultcfg.MetadataTransit, md[vaultcfg.MetadataTransit])
	case *templated:
		fmt.Fprint(env.stdout, vaultcfg.TemplatedPolicy(cfg))
	case *user != "":
		p, err := vaultcfg.UserPolicy(cfg, *user)
		if err != nil {
			fmt.Fprintf(env.stderr, "%s: %v\n", name, err)
			return exitError
		}
		fmt.Fprint(env.stdout, p)
	default:
		fmt.Fprint(env.stdout, vaultcfg.ProxyPolicy(cfg))
	}
	return exitOK
}
