package config_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/config"
)

const sample = `# comment
upstream = "imap.example.org:993"   # top level: shared
vault-addr = "http://top:8200"

[global]
log-level = "warn"

[serve]
listen = "127.0.0.1:1143"
cache-size = 64
metrics-allow-remote = true
timeout = "45s"
user = ["alice", "bob"]

[keys.import]
mount = "transit2"
`

func TestParse(t *testing.T) {
	f, err := config.Parse("c.toml", []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(f.Sections(), ","), ",keys,keys.import,serve"; got != want {
		t.Errorf("Sections() = %q, want %q", got, want)
	}
	tests := []struct {
		section, key string
		want         string
		line         int
		ok           bool
	}{
		{"serve", "listen", "127.0.0.1:1143", 9, true},
		{"serve", "cache-size", "64", 10, true},
		{"serve", "metrics-allow-remote", "true", 11, true},
		{"serve", "timeout", "45s", 12, true},
		{"serve", "user", "alice|bob", 13, true},
		{"serve", "upstream", "imap.example.org:993", 2, true}, // falls back to the top level
		{"serve", "log-level", "warn", 6, true},                // [global] is the top level
		{"keys.import", "mount", "transit2", 16, true},
		{"keys.import", "vault-addr", "http://top:8200", 3, true},
		{"keys", "mount", "", 0, false}, // a parent does not see its subsection's keys
		{"serve", "nope", "", 0, false},
	}
	for _, tt := range tests {
		e, ok := f.Lookup(tt.section, tt.key)
		if ok != tt.ok {
			t.Errorf("Lookup(%q, %q) ok = %v, want %v", tt.section, tt.key, ok, tt.ok)
			continue
		}
		if got := strings.Join(e.Values, "|"); got != tt.want || e.Line != tt.line {
			t.Errorf("Lookup(%q, %q) = %q line %d, want %q line %d", tt.section, tt.key, got, e.Line, tt.want, tt.line)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"syntax", "a = 1\nb = = 2\n", `config: c.toml:2: `},
		{"duplicate", "[serve]\na = 1\na = 2\n", `config: c.toml:3: `},
		{"date", "[serve]\n\nwhen = 2024-01-01\n", `config: c.toml:3: key "serve.when": values of type`},
		{"array of tables", "[[serve]]\na = 1\n", `arrays of tables are not supported`},
		{"table in global", "[global]\n[global.x]\na = 1\n", `config: c.toml:2: [global] holds shared keys only`},
		{"nested array", "[serve]\nu = [[1]]\n", `c.toml:2: key "serve.u": nested arrays`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("c.toml", []byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse() error = %v, want containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	_, err := config.Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, config.ErrNotExist) {
		t.Fatalf("Load(missing) error = %v, want ErrNotExist", err)
	}
	p := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(p, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if f.Path != p {
		t.Errorf("Path = %q, want %q", f.Path, p)
	}
	if err := os.Chmod(p, 0); err == nil && os.Getuid() != 0 {
		if _, err := config.Load(p); err == nil || errors.Is(err, config.ErrNotExist) {
			t.Errorf("Load(unreadable) error = %v, want a read error", err)
		}
	}
}

type strList []string

func (s *strList) String() string     { return strings.Join(*s, ",") }
func (s *strList) Set(v string) error { *s = append(*s, v); return nil }

type serveFlags struct {
	fs       *flag.FlagSet
	listen   *string
	upstream *string
	vault    *string
	cache    *int
	remote   *bool
	timeout  *time.Duration
	users    strList
}

func newServe() *serveFlags {
	s := &serveFlags{fs: flag.NewFlagSet("serve", flag.ContinueOnError)}
	s.fs.SetOutput(&bytes.Buffer{})
	s.listen = s.fs.String("listen", "127.0.0.1:143", "address to listen on")
	s.upstream = s.fs.String("upstream", "", "upstream IMAP server")
	s.vault = s.fs.String("vault-addr", "", "Vault address")
	s.cache = s.fs.Int("cache-size", 32, "cache size in MiB")
	s.remote = s.fs.Bool("metrics-allow-remote", false, "allow remote metrics")
	s.timeout = s.fs.Duration("timeout", time.Minute, "timeout")
	s.fs.Var(&s.users, "user", "user (repeatable)")
	s.fs.String("config", "", "config file")
	return s
}

func TestApplyPrecedence(t *testing.T) {
	f, err := config.Parse("c.toml", []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"SMIMEPROXY_LISTEN":     "127.0.0.1:2143", // loses to the flag
		"SMIMEPROXY_VAULT_ADDR": "http://env:8200",
		"SMIMEPROXY_CACHE_SIZE": "", // empty means unset
		"SMIMEPROXY_CONFIG":     "/ignored",
	}
	s := newServe()
	if err := s.fs.Parse([]string{"--listen", "127.0.0.1:3143"}); err != nil {
		t.Fatal(err)
	}
	if err := config.Apply(s.fs, func(k string) string { return env[k] }, f); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"listen (flag > env > file)", *s.listen, "127.0.0.1:3143"},
		{"vault-addr (env > file)", *s.vault, "http://env:8200"},
		{"upstream (top-level file)", *s.upstream, "imap.example.org:993"},
		{"cache-size ([serve])", strconv.Itoa(*s.cache), "64"},
		{"metrics-allow-remote", strconv.FormatBool(*s.remote), "true"},
		{"timeout", s.timeout.String(), "45s"},
		{"user (array → repeated)", s.users.String(), "alice,bob"},
		{"config (never from file or env)", s.fs.Lookup("config").Value.String(), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestApplyErrors(t *testing.T) {
	f, err := config.Parse("c.toml", []byte("[serve]\n\ncache-size = \"lots\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := newServe()
	_ = s.fs.Parse(nil)
	err = config.Apply(s.fs, func(string) string { return "" }, f)
	if err == nil || !strings.Contains(err.Error(), `config: c.toml:3: invalid value for "cache-size"`) {
		t.Errorf("Apply(bad file value) error = %v", err)
	}

	s = newServe()
	_ = s.fs.Parse(nil)
	env := map[string]string{"SMIMEPROXY_METRICS_ALLOW_REMOTE": "maybe"}
	err = config.Apply(s.fs, func(k string) string { return env[k] }, nil)
	if err == nil || !strings.Contains(err.Error(), "config: SMIMEPROXY_METRICS_ALLOW_REMOTE: invalid value for --metrics-allow-remote") {
		t.Errorf("Apply(bad env value) error = %v", err)
	}
	// A bad value in the environment is not reached when the flag was given.
	s = newServe()
	_ = s.fs.Parse([]string{"--metrics-allow-remote=false"})
	if err := config.Apply(s.fs, func(k string) string { return env[k] }, nil); err != nil {
		t.Errorf("Apply(flag given) error = %v, want nil", err)
	}
}

func TestValidate(t *testing.T) {
	schema := config.Schema{Sections: map[string][]string{
		"serve":       {"listen", "upstream", "vault-addr", "cache-size", "metrics-allow-remote", "timeout", "user", "log-level"},
		"keys.import": {"mount", "vault-addr", "upstream"},
	}}
	f, err := config.Parse("c.toml", []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if w, err := f.Validate(schema); err != nil || len(w) != 0 {
		t.Fatalf("Validate(sample) = %v, %v; want no warnings, nil", w, err)
	}
	tests := []struct {
		name, data, want string
	}{
		{"unknown key in section", "[serve]\nlisten = \"x\"\nlisten-addr = \"y\"\n", `config: c.toml:3: unknown key "listen-addr" in [serve]`},
		{"unknown top-level key", "\n\nbogus = 1\n[serve]\n", `config: c.toml:3: unknown key "bogus": not a flag of any command`},
		{"unknown key in [global]", "[global]\nbogus = 1\n", `config: c.toml:2: unknown key "bogus"`},
		{"unknown section", "[serv]\nlisten = \"x\"\n", `config: c.toml:1: unknown section [serv]: no such command`},
		{"key of another command", "[keys.import]\nlisten = \"x\"\n", `config: c.toml:2: unknown key "listen" in [keys.import]`},
		{"dotted key makes a section", "[serve]\nlisten = \"x\"\n\nlog.level = \"debug\"\n", `config: c.toml:4: unknown section [serve.log]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := config.Parse("c.toml", []byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Validate(schema); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Validate() error = %v, want prefix %q", err, tt.want)
			}
		})
	}
	// A parent table that only holds a subsection is fine.
	f, _ = config.Parse("c.toml", []byte("[keys]\n[keys.import]\nmount = \"m\"\n"))
	if _, err := f.Validate(schema); err != nil {
		t.Errorf("Validate(parent only) = %v", err)
	}
	// Sections of commands whose flags are unknown are accepted; unknown top-level keys then only warn.
	schema.Unchecked = []string{"decrypt"}
	f, _ = config.Parse("c.toml", []byte("user2 = \"x\"\n[decrypt]\nanything = 1\n[decrypt.sub]\nx = 1\n"))
	w, err := f.Validate(schema)
	if err != nil || len(w) != 1 || !strings.Contains(w[0], `c.toml:1: top-level key "user2"`) {
		t.Errorf("Validate(unchecked) = %q, %v; want one warning about user2", w, err)
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"vault-addr":           "SMIMEPROXY_VAULT_ADDR",
		"listen":               "SMIMEPROXY_LISTEN",
		"metrics-allow-remote": "SMIMEPROXY_METRICS_ALLOW_REMOTE",
		"tls.cert":             "SMIMEPROXY_TLS_CERT",
	} {
		if got := config.EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDefaultPath(t *testing.T) {
	tests := []struct {
		goos string
		env  map[string]string
		want string
		err  bool
	}{
		{"linux", map[string]string{"XDG_CONFIG_HOME": "/x", "HOME": "/h"}, "/x/smimeproxy/config.toml", false},
		{"linux", map[string]string{"XDG_CONFIG_HOME": "rel", "HOME": "/h"}, "/h/.config/smimeproxy/config.toml", false},
		{"linux", map[string]string{"HOME": "/h"}, "/h/.config/smimeproxy/config.toml", false},
		{"darwin", map[string]string{"HOME": "/h"}, "/h/Library/Application Support/smimeproxy/config.toml", false},
		{"linux", map[string]string{}, "", true},
		{"windows", map[string]string{}, "", true},
	}
	for _, tt := range tests {
		got, err := config.DefaultPath(tt.goos, func(k string) string { return tt.env[k] })
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("DefaultPath(%s, %v) = %q, %v; want %q, err %v", tt.goos, tt.env, got, err, tt.want, tt.err)
		}
	}
}

func TestWriteExample(t *testing.T) {
	serve := newServe()
	other := flag.NewFlagSet("keys import", flag.ContinueOnError)
	other.String("vault-addr", "", "Vault address")   // same as serve's: shared
	other.String("upstream", "x", "another upstream") // differs: written per command
	other.String("mount", "transit", "Transit mount \"quoted\"")
	cmds := []config.ExampleCommand{
		{Name: "serve", Summary: "run the proxy", Flags: serve.fs},
		{Name: "keys", Summary: "manage keys", Flags: other},
		{Name: "demo", Summary: "run a demo"},
	}
	var buf bytes.Buffer
	if err := config.WriteExample(&buf, cmds); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"# vault-addr = \"\"\n",            // shared, at the top
		"[serve]\n",                        // section per command
		"[keys.import]\n",                  // section of a subcommand's FlagSet
		"# cache-size = 32\n",              // ints unquoted
		"# metrics-allow-remote = false\n", // bools unquoted
		"# timeout = \"1m0s\"\n",           // durations as strings
		"# (env SMIMEPROXY_LISTEN)\n",      // env var named
		"# Transit mount \"quoted\"\n",     // usage as comment
		"# mount = \"transit\"\n",
		"smimeproxy demo: run a demo ----\n# (this command's flags cannot be listed here",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("example lacks %q:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "# vault-addr"), strings.Index(out, "\n["); i < 0 || i > j {
		t.Errorf("shared key not before the first table:\n%s", out)
	}
	if strings.Count(out, "# vault-addr = ") != 1 || strings.Count(out, "# upstream = ") != 2 {
		t.Errorf("shared/conflicting keys written wrongly:\n%s", out)
	}
	schema := config.Schema{Sections: map[string][]string{}, Unchecked: []string{"demo"}}
	for _, fs := range []*flag.FlagSet{serve.fs, other} {
		fs.VisitAll(func(fl *flag.Flag) {
			schema.Sections[config.Section(fs)] = append(schema.Sections[config.Section(fs)], fl.Name)
		})
	}
	// As written: valid and empty.
	f, err := config.Parse("example", buf.Bytes())
	if err != nil {
		t.Fatalf("example does not parse: %v", err)
	}
	if _, err := f.Validate(schema); err != nil {
		t.Errorf("example does not validate: %v", err)
	}
	// Every setting uncommented: still valid, and applying it leaves every flag at its default.
	un := regexp.MustCompile(`(?m)^# ([a-z][a-z0-9-]* = .*)$`).ReplaceAllString(out, "$1")
	f, err = config.Parse("example", []byte(un))
	if err != nil {
		t.Fatalf("uncommented example does not parse: %v\n%s", err, un)
	}
	if _, err := f.Validate(schema); err != nil {
		t.Errorf("uncommented example does not validate: %v", err)
	}
	if n := len(f.Entries("serve")) + len(f.Entries("")); n < 7 {
		t.Errorf("uncommented example sets %d serve/shared keys, want ≥ 7", n)
	}
	s := newServe()
	_ = s.fs.Parse(nil)
	if err := config.Apply(s.fs, func(string) string { return "" }, f); err != nil {
		t.Fatalf("Apply(uncommented example) = %v", err)
	}
	if *s.listen != "127.0.0.1:143" || *s.cache != 32 || *s.timeout != time.Minute || *s.remote {
		t.Errorf("uncommented example changed defaults: listen %q cache %d timeout %v remote %v", *s.listen, *s.cache, *s.timeout, *s.remote)
	}
}
