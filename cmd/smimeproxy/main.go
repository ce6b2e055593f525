package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// Exit codes shared by all subcommands. decrypt adds its own (see decrypt.go).
const (
	exitOK    = 0
	exitError = 1 // usage or I/O error
)

// command is one subcommand. run returns the process exit code; it never calls os.Exit itself.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *cmdEnv, args []string) int
	// flags, if set, builds the command's FlagSet without running it (for the config file's schema and
	// 'smimeproxy config example'); commands without it are listed without flags and their config section is
	// not checked.
	flags func() *flag.FlagSet
}

// cmdEnv is what a subcommand may touch of the process: standard streams and environment lookup, so tests can
// run commands in-process.
type cmdEnv struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// commandTable is every subcommand, in one place: the table is built when asked (no registration by init
// functions), and a package-level map could not be, since config and flags list the commands themselves.
func commandTable() []command {
	return []command{
		cacheCommand(),
		certsCommand(),
		clientConfigCommand(),
		configCommand(),
		decryptCommand(),
		demoCommand(),
		doctorCommand(),
		keysCommand(),
		serveCommand(),
		tlsCommand(),
	}
}

// commands returns the subcommands by name.
func commands() map[string]command {
	m := map[string]command{}
	for _, c := range commandTable() {
		m[c.name] = c
	}
	return m
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: smimeproxy <command> [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'smimeproxy <command> -h' for a command's flags.")
}

// runMain is main without os.Exit, for tests.
func runMain(ctx context.Context, env *cmdEnv, args []string) int {
	if len(args) == 0 {
		usage(env.stderr)
		return exitError
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(env.stdout)
		return exitOK
	}
	c, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(env.stderr, "smimeproxy: unknown command %q\n", args[0])
		usage(env.stderr)
		return exitError
	}
	return c.run(ctx, env, args[1:])
}

func main() {
	// Every command may hold private keys, a Vault token or decrypted mail (serve, keys, decrypt, demo, doctor's
	// self-test): none may end up in a core dump.
	if err := disableCoreDumps(); err != nil {
		fmt.Fprintf(os.Stderr, "smimeproxy: warning: core dumps could not be disabled: %v\n", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &cmdEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(runMain(ctx, env, os.Args[1:]))
}
