package main

import (
	"errors"
	"flag"
	"fmt"
	"runtime"
	"sort"

	"github.com/smimeproxy/smimeproxy/internal/config"
)

// parseFlags parses a subcommand's flags. Every subcommand goes through here so that configuration from the
// environment and the config file applies uniformly (precedence: flag > env > file): every flag not given on
// the command line takes SMIMEPROXY_<FLAG> from the environment when set, else its key from the config file
// (section [<FlagSet name>], e.g. [serve] or [keys.import], then the top level). It registers --config on fs
// when absent.
//
// errHelp is returned for -h/--help; callers return exitOK then. Any other error has already been reported on
// env.stderr (by the flag package or here); callers just return exitError.
func parseFlags(fs *flag.FlagSet, env *cmdEnv, args []string) error {
	fs.SetOutput(env.stderr)
	if fs.Lookup(config.ConfigFlag) == nil {
		fs.String(config.ConfigFlag, "", configFlagUsage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	cf, err := loadConfigFile(fs, env)
	if err == nil {
		err = config.Apply(fs, env.getenv, cf.file)
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "smimeproxy %s: %v\n", fs.Name(), err)
		return err
	}
	return nil
}

var errHelp = errors.New("help requested")

const configFlagUsage = "config file (TOML; env SMIMEPROXY_CONFIG; default $XDG_CONFIG_HOME/smimeproxy/config.toml)"

// configFile is the config file a command runs with.
type configFile struct {
	path     string       // "" when no file is used
	explicit bool         // named by --config or SMIMEPROXY_CONFIG (so it must exist)
	file     *config.File // nil when no file is used
	warnings []string     // from the schema check
}

// loadConfigFile finds, loads and checks the config file for fs (already parsed): --config, else
// $SMIMEPROXY_CONFIG, else the default path, which may be missing. Keys are checked against every registered
// command's flags (see command.flags) plus fs's own; warnings go to env.stderr.
func loadConfigFile(fs *flag.FlagSet, env *cmdEnv) (configFile, error) {
	cf, err := findConfigFile(fs, env)
	if err != nil || cf.file == nil {
		return cf, err
	}
	cf.warnings, err = cf.file.Validate(configSchema(fs))
	for _, w := range cf.warnings {
		fmt.Fprintf(env.stderr, "smimeproxy %s: warning: %s\n", fs.Name(), w)
	}
	return cf, err
}

func findConfigFile(fs *flag.FlagSet, env *cmdEnv) (configFile, error) {
	var cf configFile
	if fl := fs.Lookup(config.ConfigFlag); fl != nil {
		cf.path = fl.Value.String()
	}
	if cf.path == "" {
		cf.path = env.getenv(config.EnvName(config.ConfigFlag))
	}
	cf.explicit = cf.path != ""
	if !cf.explicit {
		p, err := config.DefaultPath(runtime.GOOS, env.getenv)
		if err != nil {
			return configFile{}, nil // no home directory: no default file
		}
		cf.path = p
	}
	f, err := config.Load(cf.path)
	if errors.Is(err, config.ErrNotExist) && !cf.explicit {
		return configFile{path: ""}, nil
	}
	if err != nil {
		return configFile{path: cf.path, explicit: cf.explicit}, err
	}
	cf.file = f
	return cf, nil
}

// configSchema lists the flags of every command that can build its FlagSet, and of fs.
func configSchema(fs *flag.FlagSet) config.Schema {
	s := config.Schema{Sections: map[string][]string{}}
	add := func(fs *flag.FlagSet) {
		sec := config.Section(fs)
		s.Sections[sec] = nil
		fs.VisitAll(func(fl *flag.Flag) { s.Sections[sec] = append(s.Sections[sec], fl.Name) })
	}
	names := make([]string, 0, len(commands()))
	for n := range commands() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands()[n]
		if c.flags == nil {
			s.Unchecked = append(s.Unchecked, n)
			continue
		}
		add(c.flags())
	}
	if fs != nil {
		add(fs)
	}
	return s
}
