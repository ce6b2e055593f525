package main

import (
	"context"
	"fmt"
)

// subcommand is one subcommand of a command group.
type subcommand = func(ctx context.Context, env *cmdEnv, args []string) int

// commandGroup is a command made of subcommands (keys, certs): one table of their names, runners and usage
// lines, from which the command, its dispatch and its usage text are made.
type commandGroup struct {
	name, summary string
	subs          []groupSub
}

// groupSub is one subcommand: its name, its usage line (after "smimeproxy ") and what runs it.
type groupSub struct {
	name, usage string
	run         subcommand
}

// command returns the group as a command of commandTable.
func (g commandGroup) command() command {
	return command{name: g.name, summary: g.summary, run: g.run}
}

// printUsage lists every subcommand's usage line on stderr.
func (g commandGroup) printUsage(env *cmdEnv) {
	for i, s := range g.subs {
		lead := "usage: "
		if i > 0 {
			lead = "       "
		}
		fmt.Fprintln(env.stderr, lead+"smimeproxy "+s.usage)
	}
	fmt.Fprintf(env.stderr, "\nRun 'smimeproxy %s <subcommand> -h' for its flags, including the Vault flags.\n", g.name)
}

// run runs the subcommand args name: usage and exit 2 without one or with an unknown one, usage and exit 0
// for -h.
func (g commandGroup) run(ctx context.Context, env *cmdEnv, args []string) int {
	if len(args) == 0 {
		g.printUsage(env)
		return exitError
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		g.printUsage(env)
		return exitOK
	}
	for _, s := range g.subs {
		if s.name == args[0] {
			return s.run(ctx, env, args[1:])
		}
	}
	fmt.Fprintf(env.stderr, "smimeproxy %s: unknown subcommand %q\n", g.name, args[0])
	g.printUsage(env)
	return exitError
}
