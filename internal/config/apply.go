package config

import (
	"flag"
	"fmt"
	"sort"
	"strings"
)

// EnvPrefix starts the name of every environment variable this package reads.
const EnvPrefix = "SMIMEPROXY_"

// ConfigFlag is the flag naming the config file; Apply never sets it from the file.
const ConfigFlag = "config"

// EnvName returns the environment variable for a flag: SMIMEPROXY_ + name in upper case with '-' and '.'
// replaced by '_' ("vault-addr" → SMIMEPROXY_VAULT_ADDR).
func EnvName(flagName string) string {
	r := strings.NewReplacer("-", "_", ".", "_")
	return EnvPrefix + strings.ToUpper(r.Replace(flagName))
}

// Section returns the config section of a FlagSet: its name with spaces turned into dots ("keys import" →
// "keys.import").
func Section(fs *flag.FlagSet) string {
	return strings.Join(strings.Fields(fs.Name()), ".")
}

// Apply sets every flag of fs that was not set on the command line (fs must be parsed) from the environment
// variable EnvName(flag) when it is non-empty, else from the file's section for fs (see File.Lookup). A value
// the flag rejects is an error naming the variable, or the file, line and key; fs is then partly applied.
// f may be nil.
func Apply(fs *flag.FlagSet, getenv func(string) string, f *File) error {
	onCmdLine := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { onCmdLine[fl.Name] = true })
	section := Section(fs)
	var err error
	fs.VisitAll(func(fl *flag.Flag) {
		if err != nil || onCmdLine[fl.Name] || fl.Name == ConfigFlag {
			return
		}
		if v := getenv(EnvName(fl.Name)); v != "" {
			if e := fs.Set(fl.Name, v); e != nil {
				err = fmt.Errorf("config: %s: invalid value for --%s: %v", EnvName(fl.Name), fl.Name, e)
			}
			return
		}
		e, ok := f.Lookup(section, fl.Name)
		if !ok {
			return
		}
		for _, v := range e.Values {
			if se := fs.Set(fl.Name, v); se != nil {
				err = fmt.Errorf("config: %s:%d: invalid value for %q: %v", f.Path, e.Line, fl.Name, se)
				return
			}
		}
	})
	return err
}

// Schema lists the keys a config file may hold: the flag names of each command's FlagSet by section.
type Schema struct {
	// Sections maps a section (see Section) to its flag names.
	Sections map[string][]string
	// Unchecked lists sections whose flags are not known (commands that cannot build their FlagSet without
	// running); keys in them and their subsections are accepted as they are, unless the section is also in
	// Sections.
	Unchecked []string
}

// Validate checks every key of f against s: a key in a section must be a flag of that section's command, a
// top-level key a flag of at least one command, and every section must be known. The first problem is returned
// as an error naming the key (or section) and line. When s has unchecked sections, an unknown top-level key
// might belong to one of them: it is returned as a warning instead.
func (f *File) Validate(s Schema) (warnings []string, err error) {
	if f == nil {
		return nil, nil
	}
	all := map[string]bool{ConfigFlag: true}
	for _, names := range s.Sections {
		for _, n := range names {
			all[n] = true
		}
	}
	unchecked := func(sec string) bool {
		for _, u := range s.Unchecked {
			if sec == u || strings.HasPrefix(sec, u+".") {
				return true
			}
		}
		return false
	}
	for _, sec := range f.Sections() {
		if sec == "" {
			for _, e := range f.Entries("") {
				if all[e.Key] {
					continue
				}
				if len(s.Unchecked) > 0 {
					warnings = append(warnings, fmt.Sprintf("config: %s:%d: top-level key %q is not a flag of any command checked (%s not checked)",
						f.Path, e.Line, e.Key, strings.Join(s.Unchecked, ", ")))
					continue
				}
				return warnings, fmt.Errorf("config: %s:%d: unknown key %q: not a flag of any command", f.Path, e.Line, e.Key)
			}
			continue
		}
		names, ok := s.Sections[sec]
		if !ok && unchecked(sec) {
			continue
		}
		if !ok {
			if len(f.Entries(sec)) == 0 && s.hasSubsection(sec) {
				continue // e.g. [keys] only declared as the parent of [keys.import]
			}
			line := f.SectionLine(sec)
			if es := f.Entries(sec); line == 0 && len(es) > 0 {
				line = es[0].Line // a table made by a dotted key (a.b = 1) has no header line
			}
			return warnings, fmt.Errorf("config: %s:%d: unknown section [%s]: no such command (known: %s)",
				f.Path, line, sec, strings.Join(s.names(), ", "))
		}
		known := map[string]bool{ConfigFlag: true}
		for _, n := range names {
			known[n] = true
		}
		for _, e := range f.Entries(sec) {
			if !known[e.Key] {
				return warnings, fmt.Errorf("config: %s:%d: unknown key %q in [%s]", f.Path, e.Line, e.Key, sec)
			}
		}
	}
	return warnings, nil
}

func (s Schema) hasSubsection(sec string) bool {
	for n := range s.Sections {
		if strings.HasPrefix(n, sec+".") {
			return true
		}
	}
	return false
}

func (s Schema) names() []string {
	out := make([]string, 0, len(s.Sections)+len(s.Unchecked))
	for n := range s.Sections {
		out = append(out, n)
	}
	out = append(out, s.Unchecked...)
	sort.Strings(out)
	return out
}
