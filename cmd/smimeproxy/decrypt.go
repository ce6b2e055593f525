package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// Exit codes of decrypt (a contract scripts rely on).
const (
	exitNotEncrypted  = 3 // not an S/MIME encrypted message (under the EFAIL rule); written unchanged
	exitUndecryptable = 4 // encrypted but not decryptable; written with the X-Smimeproxy-Status header
)

// maxDecryptInput bounds what decrypt reads; smime.Options.MaxSize bounds what it decrypts.
const maxDecryptInput = 1 << 30

// decryptCommand is the 'decrypt' subcommand (main.go lists it).
func decryptCommand() command {
	return command{
		name:    "decrypt",
		summary: "decrypt one S/MIME message (file or stdin) as the proxy would serve it",
		run:     runDecrypt,
		flags:   func() *flag.FlagSet { fs, _ := newDecryptFlagSet(nil); return fs },
	}
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

type decryptFlags struct {
	keys, certs   listFlag
	pwEnv, pwFile string
	user          string
	vault         *vaultFlags
}

const decryptUsage = "smimeproxy decrypt [--key FILE]... [--cert FILE]... [--password-env VAR] [--user U + Vault flags] [FILE]"

func newDecryptFlagSet(env *cmdEnv) (*flag.FlagSet, *decryptFlags) {
	fs := flag.NewFlagSet("decrypt", flag.ContinueOnError)
	df := &decryptFlags{}
	fs.Var(&df.keys, "key", "private key file: PKCS#12 or PEM (with or without its certificate); repeatable")
	fs.Var(&df.certs, "cert", "PEM certificate file for a --key file that holds only the key; repeatable")
	fs.StringVar(&df.pwEnv, "password-env", "", "name of the environment variable holding the PKCS#12 password")
	fs.StringVar(&df.pwFile, "password-file", "", "file holding the PKCS#12 password (first line)")
	fs.StringVar(&df.user, "user", "", "also use this user's keys from Vault")
	df.vault = addVaultFlags(fs)
	if env != nil {
		fs.Usage = func() {
			fmt.Fprintln(env.stderr, "usage: "+decryptUsage)
			fmt.Fprintln(env.stderr, "Writes the message as the proxy serves it to stdout. Exit status: 0 decrypted, 3 not an")
			fmt.Fprintln(env.stderr, "encrypted message (written unchanged), 4 encrypted but not decryptable (written with an")
			fmt.Fprintln(env.stderr, "X-Smimeproxy-Status header), 1 usage or I/O error.")
			fs.PrintDefaults()
		}
	}
	return fs, df
}

func runDecrypt(ctx context.Context, env *cmdEnv, args []string) int {
	fs, df := newDecryptFlagSet(env)
	if err := parseFlags(fs, env, args); err != nil {
		if err == errHelp {
			return exitOK
		}
		return exitError
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(env.stderr, "smimeproxy decrypt: "+format+"\n", a...)
		return exitError
	}
	if fs.NArg() > 1 {
		return fail("at most one message file, got %d", fs.NArg())
	}
	if len(df.keys) == 0 && df.user == "" {
		return fail("no keys: give --key FILE or --user U")
	}
	if len(df.certs) > 0 && len(df.keys) == 0 {
		return fail("--cert needs --key")
	}
	if df.user != "" {
		if err := vaultcfg.ValidateUser(df.user); err != nil {
			return fail("%v", err)
		}
	}

	kr := &cliKeyring{user: df.user}
	if len(df.keys) > 0 {
		pw, err := readPassword(env, df.pwEnv, df.pwFile)
		if err != nil {
			return fail("%v", err)
		}
		kr.files, err = loadDecryptKeys(df.keys, df.certs, pw)
		clear(pw)
		if err != nil {
			return fail("%v", err)
		}
	}

	var in io.Reader = env.stdin
	name := "stdin"
	if fs.NArg() == 1 && fs.Arg(0) != "-" {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return fail("%v", err)
		}
		defer f.Close()
		in, name = f, fs.Arg(0)
	}
	msg, err := io.ReadAll(io.LimitReader(in, maxDecryptInput+1))
	if err != nil {
		return fail("reading %s: %v", name, err)
	}
	if len(msg) > maxDecryptInput {
		return fail("%s: message larger than %d bytes", name, maxDecryptInput)
	}

	if df.user != "" {
		store, release, err := df.vault.open(ctx, env)
		if err != nil {
			return fail("%v", err)
		}
		defer release()
		kr.store = store
	}

	res := smime.Process(ctx, msg, kr, nil)
	if _, err := env.stdout.Write(res.Served); err != nil {
		return fail("writing the message: %v", err)
	}
	switch res.Status {
	case smime.Decrypted:
		return exitOK
	case smime.NotEncrypted:
		fmt.Fprintf(env.stderr, "smimeproxy decrypt: %s: not an S/MIME encrypted message (written unchanged)\n", name)
		return exitNotEncrypted
	default:
		detail := ""
		if cause, ok := errors.AsType[*smime.UndecryptableError](res.Err); ok && cause.Reason == smime.ReasonKeyUnavailable && cause.Err != nil {
			detail = " (" + cause.Err.Error() + ")"
		}
		fmt.Fprintf(env.stderr, "smimeproxy decrypt: %s: cannot decrypt: %s%s\n", name, res.Reason, detail)
		return exitUndecryptable
	}
}

// loadDecryptKeys reads each --key file as a key with its certificate (keystore.ParseKeyFile); a file holding
// only a key is completed with the --cert files (keystore.MergeKeyFiles).
func loadDecryptKeys(keyFiles, certFiles []string, password []byte) ([]smime.Key, error) {
	var certs [][]byte
	for _, f := range certFiles {
		d, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		certs = append(certs, d)
	}
	var keys []smime.Key
	for _, f := range keyFiles {
		d, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		chain, key, err := keystore.ParseKeyFile(d, password)
		if errors.Is(err, keystore.ErrNoCertificate) && len(certs) > 0 {
			chain, key, err = keystore.MergeKeyFiles(append([][]byte{d}, certs...), password)
		}
		clear(d)
		if err != nil {
			if errors.Is(err, keystore.ErrWrongPassword) && password == nil {
				return nil, fmt.Errorf("%s: %w (give it with --password-env or --password-file)", f, err)
			}
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		keys = append(keys, smime.Key{Cert: chain[0], Private: key})
	}
	return keys, nil
}

// cliKeyring offers the --key files' keys and, with --user, the user's keys from Vault.
type cliKeyring struct {
	files []smime.Key
	store keystore.Store
	user  string
}

// KeysFor implements smime.Keyring. A Vault failure is an error only when no --key file names a recipient.
func (k *cliKeyring) KeysFor(ctx context.Context, ids []cms.RecipientID) ([]smime.Key, error) {
	out := append([]smime.Key(nil), k.files...)
	if k.store == nil {
		return out, nil
	}
	found, err := k.store.Lookup(ctx, k.user, ids)
	if err != nil {
		for _, f := range k.files {
			for _, id := range ids {
				if id.Matches(f.Cert) {
					return out, nil
				}
			}
		}
		return nil, err
	}
	for _, f := range found {
		out = append(out, smime.Key{Cert: f.Cert, Private: f.Private})
	}
	return out, nil
}
