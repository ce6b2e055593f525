package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/config"
)

// testEnv returns a cmdEnv whose environment is exactly vars.
func testEnv(vars map[string]string) (*cmdEnv, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &cmdEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}, &out, &errb
}

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type testFlags struct {
	fs                  *flag.FlagSet
	listen, upstream    *string
	vaultAddr, logLevel *string
}

func newTestFlags() *testFlags {
	f := &testFlags{fs: flag.NewFlagSet("serve", flag.ContinueOnError)}
	f.listen = f.fs.String("listen", "127.0.0.1:1143", "listen address")
	f.upstream = f.fs.String("upstream", "", "upstream server")
	f.vaultAddr = f.fs.String("vault-addr", "", "Vault address")
	f.logLevel = f.fs.String("log-level", "info", "log level")
	return f
}

func TestParseFlagsPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "c.toml"), `
upstream = "top.example:993"
log-level = "debug"
vault-addr = "http://file:8200"

[serve]
listen = "127.0.0.1:2143"
upstream = "serve.example:993"
`)
	env, _, stderr := testEnv(map[string]string{"SMIMEPROXY_VAULT_ADDR": "http://env:8200", "SMIMEPROXY_LISTEN": "127.0.0.1:3143"})
	f := newTestFlags()
	if err := parseFlags(f.fs, env, []string{"--config", file, "--listen", "127.0.0.1:4143", "arg"}); err != nil {
		t.Fatalf("parseFlags: %v (stderr %q)", err, stderr)
	}
	for _, c := range []struct{ name, got, want string }{
		{"listen: flag > env > file", *f.listen, "127.0.0.1:4143"},
		{"vault-addr: env > file", *f.vaultAddr, "http://env:8200"},
		{"upstream: [serve] > top level", *f.upstream, "serve.example:993"},
		{"log-level: top level", *f.logLevel, "debug"},
		{"positional args kept", strings.Join(f.fs.Args(), " "), "arg"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestParseFlagsConfigLocation(t *testing.T) {
	dir := t.TempDir()
	xdg := filepath.Join(dir, "xdg")
	writeFile(t, filepath.Join(xdg, "smimeproxy", "config.toml"), "[serve]\nlisten = \"127.0.0.1:5143\"\n")
	other := writeFile(t, filepath.Join(dir, "other.toml"), "[serve]\nlisten = \"127.0.0.1:6143\"\n")

	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"default path from XDG_CONFIG_HOME", map[string]string{"XDG_CONFIG_HOME": xdg}, nil, "127.0.0.1:5143"},
		{"default path from HOME", map[string]string{"HOME": filepath.Dir(xdg) + "/nohome"}, nil, "127.0.0.1:1143"},
		{"SMIMEPROXY_CONFIG beats the default", map[string]string{"XDG_CONFIG_HOME": xdg, "SMIMEPROXY_CONFIG": other}, nil, "127.0.0.1:6143"},
		{"--config beats SMIMEPROXY_CONFIG", map[string]string{"SMIMEPROXY_CONFIG": "/nonexistent"}, []string{"--config=" + other}, "127.0.0.1:6143"},
		{"no home at all: defaults", map[string]string{}, nil, "127.0.0.1:1143"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _, stderr := testEnv(tt.env)
			f := newTestFlags()
			if err := parseFlags(f.fs, env, tt.args); err != nil {
				t.Fatalf("parseFlags: %v (stderr %q)", err, stderr)
			}
			if *f.listen != tt.want {
				t.Errorf("listen = %q, want %q", *f.listen, tt.want)
			}
		})
	}
}

func TestParseFlagsErrors(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, filepath.Join(dir, "bad.toml"), "[serve]\nlisten = \"x\"\nlisen = \"y\"\n")
	badSection := writeFile(t, filepath.Join(dir, "badsec.toml"), "upstream = \"u\"\n\n[srve]\nlisten = \"x\"\n")
	badValue := writeFile(t, filepath.Join(dir, "badval.toml"), "[serve]\nlisten = 3\n")
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"missing explicit file", nil, []string{"--config", filepath.Join(dir, "missing.toml")}, "config: file does not exist: " + filepath.Join(dir, "missing.toml")},
		{"missing SMIMEPROXY_CONFIG file", map[string]string{"SMIMEPROXY_CONFIG": filepath.Join(dir, "gone.toml")}, nil, "config: file does not exist"},
		{"unknown key", nil, []string{"--config", bad}, `config: ` + bad + `:3: unknown key "lisen" in [serve]`},
		{"unknown section", nil, []string{"--config", badSection}, `config: ` + badSection + `:3: unknown section [srve]`},
		{"unknown flag", nil, []string{"--nope"}, "flag provided but not defined: -nope"},
		{"SMIMEPROXY_CONFIG missing despite a default", map[string]string{"SMIMEPROXY_CONFIG": bad + "x", "XDG_CONFIG_HOME": dir}, nil, "config: file does not exist"},
	}
	_ = badValue
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _, stderr := testEnv(tt.env)
			f := newTestFlags()
			err := parseFlags(f.fs, env, tt.args)
			if err == nil || errors.Is(err, errHelp) {
				t.Fatalf("parseFlags() = %v, want an error", err)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.want)
			}
		})
	}
	// A string value for a string flag from an integer TOML value is accepted as its text.
	env, _, _ := testEnv(nil)
	f := newTestFlags()
	if err := parseFlags(f.fs, env, []string{"--config", badValue}); err != nil || *f.listen != "3" {
		t.Errorf("parseFlags(listen = 3) = %v, listen %q; want nil, \"3\"", err, *f.listen)
	}
	// A value the flag rejects names the file and line.
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Int("listen", 0, "")
	bv := writeFile(t, filepath.Join(dir, "badint.toml"), "[serve]\n\nlisten = \"x\"\n")
	env, _, stderr := testEnv(nil)
	if err := parseFlags(fs, env, []string{"--config", bv}); err == nil || !strings.Contains(stderr.String(), bv+`:3: invalid value for "listen"`) {
		t.Errorf("parseFlags(bad int) = %v, stderr %q", err, stderr)
	}
}

func TestParseFlagsHelp(t *testing.T) {
	env, _, stderr := testEnv(nil)
	f := newTestFlags()
	if err := parseFlags(f.fs, env, []string{"-h"}); !errors.Is(err, errHelp) {
		t.Fatalf("parseFlags(-h) = %v, want errHelp", err)
	}
	if !strings.Contains(stderr.String(), "-config") || !strings.Contains(stderr.String(), "SMIMEPROXY_CONFIG") {
		t.Errorf("help does not document --config: %q", stderr)
	}
}

func TestConfigExample(t *testing.T) {
	env, stdout, stderr := testEnv(nil)
	if code := runMain(context.Background(), env, []string{"config", "example"}); code != exitOK {
		t.Fatalf("config example exit %d, stderr %q", code, stderr)
	}
	out := stdout.String()
	for n, c := range commands() {
		if n == "config" {
			continue
		}
		if !strings.Contains(out, "---- smimeproxy "+n+": ") {
			t.Errorf("example does not list command %s", n)
		}
		if c.flags == nil {
			continue
		}
		c.flags().VisitAll(func(fl *flag.Flag) {
			if fl.Name != config.ConfigFlag && !strings.Contains(out, "# "+fl.Name+" = ") {
				t.Errorf("example lacks flag %s of %s", fl.Name, n)
			}
		})
	}
	// Written as is, and with every setting uncommented, the example passes the same checks as a user's file.
	un := regexp.MustCompile(`(?m)^# ([a-z][a-z0-9-]* = .*)$`).ReplaceAllString(out, "$1")
	dir := t.TempDir()
	for name, data := range map[string]string{"example.toml": out, "uncommented.toml": un} {
		p := writeFile(t, filepath.Join(dir, name), data)
		env, stdout, stderr := testEnv(nil)
		if code := runMain(context.Background(), env, []string{"config", "path", "--config", p}); code != exitOK || strings.TrimSpace(stdout.String()) != p {
			t.Errorf("config path --config %s: exit %d, stdout %q, stderr %q", name, code, stdout, stderr)
		}
	}
}

func TestConfigPath(t *testing.T) {
	env, stdout, _ := testEnv(map[string]string{"XDG_CONFIG_HOME": t.TempDir()})
	if code := runMain(context.Background(), env, []string{"config", "path"}); code != exitOK || !strings.Contains(stdout.String(), "(none") {
		t.Errorf("config path without a file: exit %d, %q", code, stdout)
	}
	env, _, stderr := testEnv(nil)
	if code := runMain(context.Background(), env, []string{"config", "bogus"}); code != exitError || !strings.Contains(stderr.String(), `unknown subcommand "bogus"`) {
		t.Errorf("config bogus: exit %d, %q", code, stderr)
	}
}

func TestObserveFlags(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	o := addObserveFlags(fs)
	env, _, stderr := testEnv(map[string]string{"SMIMEPROXY_LOG_FORMAT": "json", "SMIMEPROXY_METRICS_LISTEN": "0.0.0.0:0"})
	if err := parseFlags(fs, env, []string{"--log-level", "debug"}); err != nil {
		t.Fatal(err)
	}
	l, err := o.logger(env)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("hello", "password", "pw")
	if got := stderr.String(); !strings.Contains(got, `"msg":"hello","password":"***"`) {
		t.Errorf("log = %q", got)
	}
	if _, err := o.startHTTP(context.Background(), nil, nil, l); err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Errorf("startHTTP(0.0.0.0) = %v, want a loopback refusal", err)
	}
	o.metricsListen = "127.0.0.1:0"
	stop, err := o.startHTTP(context.Background(), nil, nil, l)
	if err != nil {
		t.Fatal(err)
	}
	stop()
}
