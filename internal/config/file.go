package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// GlobalSection is the name of the table that holds keys shared by every command; keys written before the first
// table header are the same as keys in [global].
const GlobalSection = "global"

// ErrNotExist is wrapped by Load when the file does not exist.
var ErrNotExist = errors.New("config: file does not exist")

// Entry is one key of a config file, its value(s) rendered as flag syntax, and the line it is on.
type Entry struct {
	Key    string
	Values []string // one per array element; a scalar gives one value
	Line   int      // 1-based; 0 when unknown
}

// File is a parsed config file. The zero value (and nil) is an empty file.
type File struct {
	Path     string
	sections map[string][]Entry // "" is the top level ([global] merges into it)
	lines    map[string]int     // section header line per section
}

// Load reads and parses the config file at path. A missing file is an error wrapping ErrNotExist.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotExist, path)
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses TOML config data; path is used in error messages only. Tables become sections (a table nested
// in a table is the section "outer.inner", for subcommands of subcommands); every other value must be a
// string, integer, float, boolean or an array of those (an array sets a repeatable flag once per element).
// Dates, arrays of tables and mixed arrays are errors that name the key and line.
func Parse(path string, data []byte) (*File, error) {
	var raw map[string]any
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("config: %s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	f := &File{Path: path, sections: map[string][]Entry{}, lines: map[string]int{}}
	lines := locate(string(data), md.Keys())
	if err := f.add(nil, raw, lines); err != nil {
		return nil, err
	}
	for _, es := range f.sections {
		sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
	}
	return f, nil
}

func (f *File) add(prefix []string, m map[string]any, lines map[string]int) error {
	section := strings.Join(prefix, ".")
	if section == GlobalSection {
		section = ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		path := append(append([]string(nil), prefix...), k)
		line := lines[toml.Key(path).String()]
		if sub, ok := m[k].(map[string]any); ok {
			if section == "" && len(prefix) == 1 {
				return fmt.Errorf("config: %s:%d: [%s] holds shared keys only, not the table %q", f.Path, line, GlobalSection, k)
			}
			f.lines[strings.Join(path, ".")] = line
			if err := f.add(path, sub, lines); err != nil {
				return err
			}
			continue
		}
		vals, err := render(m[k])
		if err != nil {
			return fmt.Errorf("config: %s:%d: key %q: %v", f.Path, line, strings.Join(path, "."), err)
		}
		f.sections[section] = append(f.sections[section], Entry{Key: k, Values: vals, Line: line})
	}
	return nil
}

// render turns a TOML value into flag syntax.
func render(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case int64:
		return []string{strconv.FormatInt(v, 10)}, nil
	case float64:
		return []string{strconv.FormatFloat(v, 'g', -1, 64)}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if _, nested := e.([]any); nested {
				return nil, errors.New("nested arrays are not supported")
			}
			s, err := render(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case []map[string]any:
		return nil, errors.New("arrays of tables are not supported")
	default:
		return nil, fmt.Errorf("values of type %T are not supported (write it as a string)", v)
	}
}

// locate finds the line of each key, following the parser's key order (the order of the file).
func locate(data string, keys []toml.Key) map[string]int {
	out := make(map[string]int, len(keys))
	lines := strings.Split(data, "\n")
	next := 0 // index of the first line not yet consumed
	for _, k := range keys {
		last := k[len(k)-1]
		for i := next; i < len(lines); i++ {
			if lineHasKey(lines[i], last) {
				out[k.String()] = i + 1
				next = i
				break
			}
		}
	}
	return out
}

// lineHasKey reports whether a line is a table header ending in name or an assignment to name (bare, quoted or
// last part of a dotted key).
func lineHasKey(line, name string) bool {
	s := strings.TrimSpace(line)
	if strings.HasPrefix(s, "#") || s == "" {
		return false
	}
	if strings.HasPrefix(s, "[") {
		h := strings.Trim(strings.SplitN(s, "]", 2)[0], "[ ")
		parts := strings.Split(h, ".")
		p := strings.Trim(strings.TrimSpace(parts[len(parts)-1]), `"'`)
		return p == name
	}
	lhs, _, ok := strings.Cut(s, "=")
	if !ok {
		return false
	}
	parts := strings.Split(lhs, ".")
	p := strings.Trim(strings.TrimSpace(parts[len(parts)-1]), `"'`)
	return p == name
}

// Sections returns the section names that hold keys or were declared, sorted; "" is the top level.
func (f *File) Sections() []string {
	if f == nil {
		return nil
	}
	seen := map[string]bool{}
	for s := range f.sections {
		seen[s] = true
	}
	for s := range f.lines {
		if s != GlobalSection {
			seen[s] = true
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Entries returns the keys of one section in file order.
func (f *File) Entries(section string) []Entry {
	if f == nil {
		return nil
	}
	if section == GlobalSection {
		section = ""
	}
	return f.sections[section]
}

// SectionLine returns the line of a section's header, 0 if unknown or top level.
func (f *File) SectionLine(section string) int {
	if f == nil {
		return 0
	}
	return f.lines[section]
}

// Lookup finds key for a command's section: in the section itself, then in each enclosing section ("keys" for
// "keys.import"), then at the top level.
func (f *File) Lookup(section, key string) (Entry, bool) {
	if f == nil {
		return Entry{}, false
	}
	for {
		for _, e := range f.sections[section] {
			if e.Key == key {
				return e, true
			}
		}
		if section == "" {
			return Entry{}, false
		}
		if i := strings.LastIndexByte(section, '.'); i >= 0 {
			section = section[:i]
		} else {
			section = ""
		}
	}
}

// DefaultPath returns the default config file location, $XDG_CONFIG_HOME/smimeproxy/config.toml on Unix (else
// $HOME/.config/...), following os.UserConfigDir's rules for goos but reading the environment through getenv.
// It fails when the variables it needs are unset.
func DefaultPath(goos string, getenv func(string) string) (string, error) {
	var dir string
	switch goos {
	case "windows":
		dir = getenv("AppData")
		if dir == "" {
			return "", errors.New("config: %AppData% is not set")
		}
	case "darwin", "ios":
		home := getenv("HOME")
		if home == "" {
			return "", errors.New("config: $HOME is not set")
		}
		dir = filepath.Join(home, "Library", "Application Support")
	case "plan9":
		home := getenv("home")
		if home == "" {
			return "", errors.New("config: $home is not set")
		}
		dir = filepath.Join(home, "lib")
	default:
		dir = getenv("XDG_CONFIG_HOME")
		if dir == "" || !filepath.IsAbs(dir) {
			home := getenv("HOME")
			if home == "" {
				return "", errors.New("config: neither $XDG_CONFIG_HOME nor $HOME is set")
			}
			dir = filepath.Join(home, ".config")
		}
	}
	return filepath.Join(dir, "smimeproxy", "config.toml"), nil
}
