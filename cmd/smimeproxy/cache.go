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
		summary: "show or clear a user's metadata store (serve --metadata-store): cache stats|clear --user U",
		run:     runCache,
		flags:   func() *flag.FlagSet { fs, _, _ := newCacheFlagSet(); return fs },
	}
}

func newCacheFlagSet() (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet("cache", flag.ContinueOnError)
	user := fs.String("user", "", "IMAP login whose store to show or clear")
	dir := fs.String("metadata-store", defaultMetadataStore(), "directory of the metadata store, as given to serve")
	return fs, user, dir
}

// runCache is `smimeproxy cache stats|clear --user U`. Neither needs Vault: stats reads the store's counters
// (not secret), clear deletes the user's file (the proxy must not be running; it starts a new one on the
// user's next fetch).
func runCache(_ context.Context, env *cmdEnv, args []string) int {
	fs, user, dir := newCacheFlagSet()
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: smimeproxy cache stats|clear --user U [--metadata-store DIR]")
		fs.PrintDefaults()
	}
	if len(args) == 0 || (args[0] != "stats" && args[0] != "clear") {
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
