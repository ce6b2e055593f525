package main

import (
	"context"
	"flag"
	"fmt"
	"sort"

	"github.com/smimeproxy/smimeproxy/internal/config"
)

// configCommand is the 'config' subcommand (main.go lists it).
func configCommand() command {
	return command{
		name:    "config",
		summary: "configuration file: config example|path",
		run:     runConfig,
	}
}

func configUsage(env *cmdEnv) {
	fmt.Fprintln(env.stderr, "usage: smimeproxy config example   print a commented example config file covering every flag")
	fmt.Fprintln(env.stderr, "       smimeproxy config path      print the config file in use (after checking it), or why none")
}

func runConfig(ctx context.Context, env *cmdEnv, args []string) int {
	if len(args) == 0 {
		configUsage(env)
		return exitError
	}
	switch args[0] {
	case "-h", "--help", "help":
		configUsage(env)
		return exitOK
	case "example":
		return runConfigExample(env, args[1:])
	case "path":
		return runConfigPath(env, args[1:])
	}
	fmt.Fprintf(env.stderr, "smimeproxy config: unknown subcommand %q\n", args[0])
	configUsage(env)
	return exitError
}

func runConfigExample(env *cmdEnv, args []string) int {
	if len(args) > 0 {
		fmt.Fprintf(env.stderr, "smimeproxy config example: unexpected argument %q\n", args[0])
		return exitError
	}
	names := make([]string, 0, len(commands()))
	for n := range commands() {
		names = append(names, n)
	}
	sort.Strings(names)
	var cmds []config.ExampleCommand
	for _, n := range names {
		c := commands()[n]
		if n == "config" {
			continue
		}
		ec := config.ExampleCommand{Name: n, Summary: c.summary}
		if c.flags != nil {
			ec.Flags = c.flags()
		}
		cmds = append(cmds, ec)
	}
	if err := config.WriteExample(env.stdout, cmds); err != nil {
		fmt.Fprintf(env.stderr, "smimeproxy config example: %v\n", err)
		return exitError
	}
	return exitOK
}

func runConfigPath(env *cmdEnv, args []string) int {
	fs := flag.NewFlagSet("config path", flag.ContinueOnError)
	fs.String(config.ConfigFlag, "", configFlagUsage)
	fs.SetOutput(env.stderr)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitError
	}
	cf, err := loadConfigFile(fs, env)
	if err != nil {
		fmt.Fprintf(env.stderr, "smimeproxy config path: %v\n", err)
		return exitError
	}
	if cf.file == nil {
		fmt.Fprintln(env.stdout, "(none: built-in defaults, flags and SMIMEPROXY_* environment only)")
		return exitOK
	}
	fmt.Fprintln(env.stdout, cf.path)
	return exitOK
}
