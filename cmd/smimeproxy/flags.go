package main

import (
	"errors"
	"flag"
)

// parseFlags parses a subcommand's flags. Every subcommand goes through here so that configuration from the
// environment and the config file applies uniformly (precedence: flag > env > file).
// errHelp is returned for -h/--help; callers return exitOK then.
func parseFlags(fs *flag.FlagSet, env *cmdEnv, args []string) error {
	fs.SetOutput(env.stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	return nil
}

var errHelp = errors.New("help requested")
