package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/tlscert"
)

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// doctorRun runs 'smimeproxy doctor args...' in-process with exactly the environment vars.
func doctorRun(t *testing.T, vars map[string]string, args ...string) (int, string) {
	t.Helper()
	if vars == nil {
		vars = map[string]string{}
	}
	if _, ok := vars["HOME"]; !ok {
		vars["HOME"] = t.TempDir() // no ~/.vault-token, no default config
	}
	env, stdout, stderr := testEnv(vars)
	code := runMain(context.Background(), env, append([]string{"doctor"}, args...))
	t.Logf("doctor %s → %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
	return code, stdout.String()
}

// wantLines checks that each pattern matches a whole output line.
func wantLines(t *testing.T, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)^` + p + `$`).MatchString(out) {
			t.Errorf("no line matching %q in:\n%s", p, out)
		}
	}
}

func importKey(t *testing.T, vars map[string]string, user string, extra ...string) {
	t.Helper()
	env, stdout, stderr := testEnv(vars)
	args := append([]string{"keys", "import", "--user", user, "--password-env", "P12PW"}, extra...)
	args = append(args, filepath.Join("..", "..", "testdata", "thunderbird", "Bob.p12"))
	if code := runMain(context.Background(), env, args); code != exitOK {
		t.Fatalf("keys import: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestDoctorRealDovecotAndVault(t *testing.T) {
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{})
	v := testenv.StartVault(t)
	vars := map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": v.RootToken(), "P12PW": "nss", "HOME": t.TempDir()}
	importKey(t, vars, "bob")
	importKey(t, vars, "tbob", "--transit")

	// Everything fine: implicit TLS upstream, keys in KV and in Transit pass the decryption self-test.
	code, out := doctorRun(t, vars, "--upstream", "imaps://"+dc.TLSAddr(), "--upstream-ca-file", dc.CAFile(), "--user", "bob")
	if code != exitOK {
		t.Errorf("exit %d, want 0", code)
	}
	wantLines(t, out,
		`ok    config: no file .*`,
		`ok    upstream `+dc.TLSAddr()+`: reachable`,
		`ok    upstream `+dc.TLSAddr()+`: implicit TLS, TLS 1\.3`,
		`ok    upstream certificate for 127\.0\.0\.1 valid until \d{4}-\d\d-\d\d`,
		`ok    upstream `+dc.TLSAddr()+`: CAPABILITY .*IMAP4rev1.*`,
		`ok    vault: connected and logged in`,
		`ok    key [0-9a-f]{16} of bob \(.*, kv\): decryption self-test passed`,
		`ok    key [0-9a-f]{16} of bob \(.*\): certificate valid until 2031-\d\d-\d\d`,
		`0 failed, 0 warnings`,
	)
	code, out = doctorRun(t, vars, "--upstream", "imaps://"+dc.TLSAddr(), "--upstream-ca-file", dc.CAFile(), "--user", "tbob")
	if code != exitOK {
		t.Errorf("transit: exit %d, want 0", code)
	}
	wantLines(t, out, `ok    key [0-9a-f]{16} of tbob \(.*, transit\): decryption self-test passed`,
		`ok    vault: APPEND-marker key present`)

	// A login mapped to a key set as serve maps it.
	code, out = doctorRun(t, vars, "--upstream", "imaps://"+dc.TLSAddr(), "--upstream-ca-file", dc.CAFile(),
		"--user", "bob@example.com", "--key-user-template", "{localpart}")
	if code != exitOK {
		t.Errorf("key-user-template: exit %d, want 0", code)
	}
	wantLines(t, out, `ok    keys: login bob@example\.com uses the key set bob \(--key-user-template \{localpart\}\)`,
		`ok    key [0-9a-f]{16} of bob \(.*, kv\): decryption self-test passed`)

	// The same through a config file: upstream settings in [serve] (as serve reads them), Vault at the top
	// level, doctor's own user in [doctor]; STARTTLS on the plaintext port.
	cfg := writeFile(t, filepath.Join(t.TempDir(), "config.toml"), fmt.Sprintf(`vault-addr = %q
[serve]
upstream = "imap://%s"
upstream-ca-file = %q
[doctor]
user = "bob"
expiry-warn = "9000h"
`, v.Addr(), dc.Addr(), dc.CAFile()))
	code, out = doctorRun(t, map[string]string{"VAULT_TOKEN": v.RootToken(), "SMIMEPROXY_CONFIG": cfg})
	if code != exitOK {
		t.Errorf("config file: exit %d, want 0", code)
	}
	wantLines(t, out,
		`ok    config: `+regexp.QuoteMeta(cfg),
		`ok    upstream `+dc.Addr()+`: STARTTLS, TLS 1\.3`,
		`warn  upstream certificate for 127\.0\.0\.1 expires on .* \(in 36\d days\)  → tell the mail server's operator`,
		`ok    key [0-9a-f]{16} of bob .*: decryption self-test passed`,
		`0 failed, 1 warnings`,
	)
}

func TestDoctorFailures(t *testing.T) {
	dc := testenv.StartDovecot(t, testenv.DovecotOptions{})
	v := testenv.StartVault(t)
	good := map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": v.RootToken()}
	closed := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	other, err := tlscert.Generate(tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	otherKey := writeFile(t, filepath.Join(dir, "other-key.pem"), string(other.KeyPEM))
	goodCert := writeFile(t, filepath.Join(dir, "cert.pem"), string(other.CertPEM))
	third, err := tlscert.Generate(tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	thirdKey := writeFile(t, filepath.Join(dir, "third-key.pem"), string(third.KeyPEM))

	tests := []struct {
		name  string
		vars  map[string]string
		args  []string
		lines []string
	}{
		{"untrusted upstream certificate", good, []string{"--upstream", "imaps://" + dc.TLSAddr()},
			[]string{`FAIL  upstream ` + dc.TLSAddr() + `: TLS handshake: .*certificate signed by unknown authority.*  → if the server uses a private CA, give its certificate with --upstream-ca-file.*`}},
		{"imap:// to an implicit-TLS port", good, []string{"--upstream", "imap://" + dc.TLSAddr(), "--upstream-ca-file", dc.CAFile(), "--timeout", "2s"},
			[]string{`FAIL  upstream ` + dc.TLSAddr() + `: no IMAP greeting: .*  → .*use imaps://`}},
		{"imaps:// to a STARTTLS port", good, []string{"--upstream", "imaps://" + dc.Addr(), "--upstream-ca-file", dc.CAFile(), "--timeout", "2s"},
			[]string{`FAIL  upstream ` + dc.Addr() + `: TLS handshake: .*  → this port speaks plaintext IMAP: use imap://` + dc.Addr() + ` \(STARTTLS\)`}},
		{"imap:// with STARTTLS", good, []string{"--upstream", "imap://" + dc.Addr(), "--upstream-ca-file", dc.CAFile()},
			[]string{`ok    upstream ` + dc.Addr() + `: STARTTLS, TLS 1\.3`, `ok    upstream ` + dc.Addr() + `: CAPABILITY .*IMAP4rev1.*`}},
		{"bad scheme", good, []string{"--upstream", "pop3://" + dc.Addr()},
			[]string{`FAIL  backend: upstream URL "pop3://.*": scheme must be imaps or imap  → write the upstream as imaps://host\[:port\] .*`}},
		{"bare host:port", good, []string{"--upstream", dc.TLSAddr()},
			[]string{`FAIL  backend: upstream URL.*  → write the upstream as imaps://host\[:port\] .*`}},
		{"plaintext server refusing logins", good, []string{"--upstream", "imap://" + fakeIMAP(t, "IMAP4rev1 LOGINDISABLED")},
			[]string{`ok    upstream .*: plaintext on loopback \(no STARTTLS offered\)`, `FAIL  upstream .*: LOGINDISABLED: .*  → use TLS.*`}},
		{"not an IMAP4rev1 server", good, []string{"--upstream", "imap://" + fakeIMAP(t, "IMAP2")},
			[]string{`FAIL  upstream .*: neither IMAP4rev1 nor IMAP4rev2 in CAPABILITY IMAP2  → .*`}},
		{"nothing listening", good, []string{"--upstream", "imaps://" + closed},
			[]string{`FAIL  upstream ` + closed + `: cannot connect: .*connection refused  → check the host name and port.*`}},
		{"no upstream", good, nil,
			[]string{`FAIL  upstream: not configured  → set upstream = .*`}},
		{"no vault address", map[string]string{"VAULT_TOKEN": "x"}, []string{"--upstream", "imaps://" + dc.TLSAddr(), "--upstream-ca-file", dc.CAFile()},
			[]string{`FAIL  vault: .*no vault address.*  → set vault-addr in the config file, or VAULT_ADDR`}},
		{"vault unreachable", map[string]string{"VAULT_ADDR": "http://" + closed, "VAULT_TOKEN": "x"}, []string{"--upstream", "imaps://" + dc.TLSAddr(), "--upstream-ca-file", dc.CAFile(), "--vault-timeout", "2s"},
			[]string{`FAIL  vault: .*  → start Vault or fix vault-addr / VAULT_ADDR.*`}},
		{"bad token", map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": "hvs.not-a-token"}, []string{"--upstream", "imaps://" + dc.TLSAddr(), "--upstream-ca-file", dc.CAFile()},
			[]string{`FAIL  vault: .*  → log in again \(vault login\).*`}},
		{"user without keys", good, []string{"--upstream", "imaps://" + dc.TLSAddr(), "--upstream-ca-file", dc.CAFile(), "--user", "nobody"},
			[]string{`FAIL  keys of nobody: none in Vault  → import your S/MIME key: smimeproxy keys import --user nobody .*`}},
		{"no user", good, []string{"--upstream", "imaps://" + dc.TLSAddr(), "--upstream-ca-file", dc.CAFile()},
			[]string{`warn  keys: not checked \(no user given\)  → .*`, `0 failed, 1 warnings`}},
		{"client TLS key does not match", good, []string{"--upstream", "imaps://" + dc.TLSAddr(), "--upstream-ca-file", dc.CAFile(), "--tls-cert", goodCert, "--tls-key", thirdKey},
			[]string{`FAIL  client TLS: tlscert: certificate and private key do not match .*  → give a matching .*`}},
		{"client TLS ok", good, []string{"--upstream", "imaps://" + dc.TLSAddr(), "--upstream-ca-file", dc.CAFile(), "--tls-cert", goodCert, "--tls-key", otherKey},
			[]string{`ok    client TLS certificate ` + regexp.QuoteMeta(goodCert) + ` valid until .*`}},
		{"unknown config key", map[string]string{"SMIMEPROXY_CONFIG": writeFile(t, filepath.Join(dir, "bad.toml"), "[doctor]\nusr = \"bob\"\n")}, nil,
			[]string{`FAIL  config: config: .*bad.toml:2: unknown key "usr" in \[doctor\]  → .*`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range tt.vars {
				vars[k] = v
			}
			code, out := doctorRun(t, vars, tt.args...)
			wantLines(t, out, tt.lines...)
			wantFail := strings.Contains(strings.Join(tt.lines, "\n"), "FAIL")
			if (code != exitOK) != wantFail {
				t.Errorf("exit %d, want failure %v", code, wantFail)
			}
			for _, secret := range []string{v.RootToken(), "hvs.not-a-token"} {
				if strings.Contains(out, secret) {
					t.Errorf("output contains the Vault token %q", secret)
				}
			}
		})
	}
}

// fakeIMAP is a fault-injection server on 127.0.0.1: a misconfigured IMAP server that greets and answers
// CAPABILITY with caps (and LOGOUT), for conditions a correctly configured Dovecot cannot produce.
func fakeIMAP(t *testing.T, caps string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "* OK fake ready\r\n")
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
					switch strings.ToUpper(cmd) {
					case "CAPABILITY":
						fmt.Fprintf(c, "* CAPABILITY %s\r\n%s OK done\r\n", caps, tag)
					case "LOGOUT":
						fmt.Fprintf(c, "* BYE\r\n%s OK bye\r\n", tag)
						return
					default:
						fmt.Fprintf(c, "%s BAD unsupported\r\n", tag)
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
