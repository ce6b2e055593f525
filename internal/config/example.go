package config

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ExampleCommand is one command described by WriteExample.
type ExampleCommand struct {
	Name    string
	Summary string
	Flags   *flag.FlagSet // nil: the command is listed without flags
}

// WriteExample writes a commented example config file covering every flag of cmds, each set to its default and
// commented out, so the file as written changes nothing. Flags that several commands share with the same
// default and help text are written once at the top level; the others under [command].
func WriteExample(w io.Writer, cmds []ExampleCommand) error {
	bw := bufio.NewWriter(w)
	sorted := append([]ExampleCommand(nil), cmds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })

	type use struct {
		fl   *flag.Flag
		cmds []string
	}
	uses := map[string]*use{}
	conflict := map[string]bool{}
	for _, c := range sorted {
		if c.Flags == nil {
			continue
		}
		c.Flags.VisitAll(func(fl *flag.Flag) {
			if fl.Name == ConfigFlag {
				return
			}
			u := uses[fl.Name]
			if u == nil {
				uses[fl.Name] = &use{fl: fl, cmds: []string{c.Name}}
				return
			}
			if u.fl.DefValue != fl.DefValue || u.fl.Usage != fl.Usage {
				conflict[fl.Name] = true
			}
			u.cmds = append(u.cmds, c.Name)
		})
	}
	shared := func(name string) bool { u := uses[name]; return u != nil && len(u.cmds) > 1 && !conflict[name] }

	fmt.Fprint(bw, `# smimeproxy configuration file (TOML, https://toml.io/en/v1.0.0).
#
# Default location: $XDG_CONFIG_HOME/smimeproxy/config.toml (usually ~/.config/smimeproxy/config.toml);
# choose another with --config FILE or SMIMEPROXY_CONFIG=FILE. A missing default file is fine; a missing
# file named explicitly is an error, and so is any key that is not a flag.
#
# Every flag of every command can be set here: a top-level key applies to every command that has that flag,
# a key under [command] to that command only (and wins over the top-level one). Precedence:
#   command-line flag  >  environment SMIMEPROXY_<FLAG> (upper case, '-' becomes '_')  >  this file.
# Durations are strings ("30s", "5m"); a flag that may be repeated takes an array (["a", "b"]).
# Every value below is the built-in default, commented out: uncomment what you change.
`)
	var names []string
	for n := range uses {
		if shared(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) > 0 {
		fmt.Fprint(bw, "\n# ---- Shared by several commands ----\n")
		for _, n := range names {
			writeFlag(bw, uses[n].fl, "used by "+strings.Join(uses[n].cmds, ", "))
		}
	}
	for _, c := range sorted {
		fmt.Fprintf(bw, "\n# ---- smimeproxy %s: %s ----\n", c.Name, c.Summary)
		if c.Flags == nil {
			fmt.Fprintf(bw, "# (this command's flags cannot be listed here; run 'smimeproxy %s -h')\n", c.Name)
			continue
		}
		var own []*flag.Flag
		c.Flags.VisitAll(func(fl *flag.Flag) {
			if fl.Name != ConfigFlag && !shared(fl.Name) {
				own = append(own, fl)
			}
		})
		if len(own) == 0 {
			fmt.Fprint(bw, "# (no flags of its own)\n")
			continue
		}
		fmt.Fprintf(bw, "[%s]\n", Section(c.Flags))
		for _, fl := range own {
			writeFlag(bw, fl, "")
		}
	}
	return bw.Flush()
}

func writeFlag(w io.Writer, fl *flag.Flag, note string) {
	fmt.Fprintln(w)
	for _, l := range strings.Split(strings.TrimSpace(fl.Usage), "\n") {
		fmt.Fprintf(w, "# %s\n", strings.TrimSpace(l))
	}
	extra := "env " + EnvName(fl.Name)
	if note != "" {
		extra = note + "; " + extra
	}
	fmt.Fprintf(w, "# (%s)\n", extra)
	fmt.Fprintf(w, "# %s = %s\n", bareKey(fl.Name), tomlValue(fl))
}

// bareKey quotes a key that is not a TOML bare key (A-Za-z0-9_-).
func bareKey(k string) string {
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return tomlString(k)
		}
	}
	return k
}

// tomlValue renders a flag's default as a TOML value of the flag's type.
func tomlValue(fl *flag.Flag) string {
	if g, ok := fl.Value.(flag.Getter); ok {
		// The type comes from the current value; the text from DefValue (the default, as Go prints it, which is
		// also valid TOML for these types).
		switch g.Get().(type) {
		case bool, int, int64, uint, uint64, float64:
			return fl.DefValue
		}
	}
	return tomlString(fl.DefValue)
}

// tomlString writes a TOML basic string (TOML v1.0.0 "String": escapes \ " and control characters).
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
