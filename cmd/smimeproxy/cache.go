package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/smimeproxy/smimeproxy/metastore"
)

// cacheCommand is the 'cache' subcommand (main.go lists it).
func cacheCommand() command {
	return command{
		name:    "cache",
		summary: "show, clear or re-key a user's metadata store (serve --metadata-store): cache stats|clear|rotate-key --user U",
		run:     runCache,
		flags:   func() *flag.FlagSet { fs, _, _, _ := newCacheFlagSet(); return fs },
	}
}

func newCacheFlagSet() (*flag.FlagSet, *string, *string, *vaultFlags) {
	fs := flag.NewFlagSet("cache", flag.ContinueOnError)
	user := fs.String("user", "", "IMAP login whose store to show, clear or re-key")
	dir := fs.String("metadata-store", defaultMetadataStore(), "directory of the metadata store, as given to serve")
	vf := addVaultFlags(fs)
	return fs, user, dir, vf
}

// runCache is `smimeproxy cache stats|clear|rotate-key --user U`. stats and clear need no Vault: stats reads
// the store's counters (not secret), clear deletes the user's file (the proxy must not be running; it starts a
// new one on the user's next fetch). rotate-key replaces the user's store key in Vault (the Vault flags, as
// given to serve, including --vault-user) and deletes the file sealed under the old one (metastore.Rotate).
func runCache(ctx context.Context, env *cmdEnv, args []string) int {
	fs, user, dir, vf := newCacheFlagSet()
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: smimeproxy cache stats|clear|rotate-key --user U [--metadata-store DIR] [Vault flags, for rotate-key]")
		fs.PrintDefaults()
	}
	if len(args) == 0 || (args[0] != "stats" && args[0] != "clear" && args[0] != "rotate-key") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fs.SetOutput(env.stdout)
			fs.Usage()
			return exitOK
		}
		fs.Usage()
		return exitError
	}
	verb := args[0]
	if err := parseFlags(fs, env, args[1:]); err != nil {
		if err == errHelp {
			return exitOK
		}
		return exitError
	}
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "smimeproxy cache %s: %v\n", verb, err)
		return exitError
	}
	switch {
	case fs.NArg() > 0:
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	case *user == "":
		return fail(errors.New("no user: give --user U (the IMAP login)"))
	case *dir == "":
		return fail(errors.New("no metadata store: give --metadata-store DIR"))
	}
	if verb == "rotate-key" {
		store, err := vf.openVault(ctx, env)
		if err != nil {
			return fail(err)
		}
		defer store.Close()
		err = metastore.Rotate(*dir, *user, func() error { return store.RotateMetastoreKey(ctx, *user) })
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(env.stdout, "metadata store key of %s replaced in Vault; the store is rebuilt under the new key on the next sync\n", *user)
		return exitOK
	}
	if verb == "clear" {
		if err := metastore.RemoveFile(*dir, *user); err != nil && !os.IsNotExist(err) {
			return fail(err)
		}
		fmt.Fprintf(env.stdout, "metadata store of %s cleared\n", *user)
		return exitOK
	}
	st, err := metastore.StatFile(*dir, *user)
	if os.IsNotExist(err) {
		fmt.Fprintf(env.stdout, "no metadata store for %s in %s\n", *user, *dir)
		return exitOK
	}
	if err != nil && st.FileBytes == 0 {
		return fail(err)
	}
	fmt.Fprintf(env.stdout, "user:     %s\nfile:     %s/%s (%d bytes)\n", *user, *dir, metastore.FileName(*user), st.FileBytes)
	if err != nil {
		fmt.Fprintf(env.stdout, "entries:  unknown (%v)\n", err)
		return exitOK
	}
	fmt.Fprintf(env.stdout, "entries:  %d\nbytes:    %d\n", st.Entries, st.Bytes)
	return exitOK
}
