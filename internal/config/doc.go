// Package config owns smimeproxy's configuration file and environment layer: a TOML file (TOML v1.0.0) with
// one table per subcommand plus top-level keys shared by all commands, and SMIMEPROXY_* environment variables,
// both applied to a command's flag.FlagSet for every flag not given on the command line (precedence: flag >
// environment > file).
//
// The package knows nothing about particular commands or flags: it maps names generically, so a flag added to
// any command is configurable without touching this package. It reads no environment itself (callers pass a
// getenv function) and writes nothing.
//
// Implementation notes: TOML parsing is github.com/BurntSushi/toml; the parser does not export key
// positions, so File locates each key's line with a small scanner that follows the parser's key order (good
// for the flat key = value files this package accepts; a key inside a multi-line string could mislead it,
// which only affects the line number in an error message).
package config
