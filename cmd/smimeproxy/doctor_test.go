package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/tlscert"
)

// dovecot is a real Dovecot 2.3 on a loopback address for one test, with implicit TLS and STARTTLS listeners using a
// tlscert certificate, and one user (bob).
type dovecot struct {
	dir                 string
	imapAddr, imapsAddr string
	caFile              string
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startDovecot starts Dovecot listening on host (a loopback address) with extra config lines appended. Dovecot
// treats a client whose address equals the listening address as secure (plaintext login allowed); listening on
// 127.0.0.2 while clients come from 127.0.0.1 avoids that.
func startDovecot(t *testing.T, host, extra string) *dovecot {
	t.Helper()
	bin := "/usr/sbin/dovecot"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("dovecot not installed at %s (scripts/setup.sh installs it): %v", bin, err)
	}
	if os.Getuid() != 0 {
		t.Fatal("this Dovecot harness runs Dovecot as root (its login and auth processes drop to dovenull/dovecot)")
	}
	dir := t.TempDir()
	// Dovecot's auth process (user dovecot) must reach the passwd file: open the temp dir and its parent.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := tlscert.Generate(tlscert.Options{Hosts: []string{host}})
	if err != nil {
		t.Fatal(err)
	}
	d := &dovecot{dir: dir, caFile: filepath.Join(dir, "cert.pem")}
	for name, data := range map[string][]byte{"cert.pem": cert.CertPEM, "key.pem": cert.KeyPEM, "users": []byte("bob:{PLAIN}bob-pw\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p1, p2 := freeLoopbackPort(t), freeLoopbackPort(t)
	d.imapAddr, d.imapsAddr = net.JoinHostPort(host, fmt.Sprint(p1)), net.JoinHostPort(host, fmt.Sprint(p2))
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
listen = %[5]s
protocols = imap
ssl = yes
ssl_cert = <%[1]s/cert.pem
ssl_key = <%[1]s/key.pem
auth_mechanisms = plain
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%n %[1]s/users
}
userdb {
  driver = static
  args = uid=0 gid=0 home=%[1]s/mail/%%n
}
mail_location = maildir:~/Maildir
first_valid_uid = 0
first_valid_gid = 0
service anvil {
  chroot =
}
service imap-login {
  chroot =
  inet_listener imap {
    port = %[2]d
  }
  inet_listener imaps {
    port = %[3]d
    ssl = yes
  }
}
%[4]s
`, dir, p1, p2, extra, host)
	cfg := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-F", "-c", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting dovecot: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	// Wait for the plaintext listener's greeting (bounded).
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.imapAddr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "* OK") {
				return d
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Fatalf("dovecot did not come up on %s: %v\n%s", d.imapAddr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
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

// standInServe registers, when no serve command exists yet, a stand-in with serve's upstream flags so that a
// config file's [serve] section is known. It never runs. With the real serve registered it does nothing, and
// the test then checks that serve's flags and doctor's agree.
func standInServe() {
	if _, ok := commands["serve"]; ok {
		return
	}
	register(command{name: "serve", summary: "(test stand-in)",
		run: func(context.Context, *cmdEnv, []string) int { return exitError },
		flags: func() *flag.FlagSet {
			fs, _ := newDoctorFlagSet()
			fs.Init("serve", flag.ContinueOnError)
			return fs
		}})
}

func TestDoctorRealDovecotAndVault(t *testing.T) {
	standInServe()
	dc := startDovecot(t, "127.0.0.1", "")
	v := testenv.StartVault(t)
	vars := map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": v.RootToken(), "P12PW": "nss", "HOME": t.TempDir()}
	importKey(t, vars, "bob")
	importKey(t, vars, "tbob", "--transit")

	// Everything fine: implicit TLS upstream, keys in KV and in Transit pass the decryption self-test.
	code, out := doctorRun(t, vars, "--upstream", "imaps://"+dc.imapsAddr, "--upstream-ca-file", dc.caFile, "--user", "bob")
	if code != exitOK {
		t.Errorf("exit %d, want 0", code)
	}
	wantLines(t, out,
		`ok    config: no file .*`,
		`ok    upstream `+dc.imapsAddr+`: reachable`,
		`ok    upstream `+dc.imapsAddr+`: implicit TLS, TLS 1\.3`,
		`ok    upstream certificate for 127\.0\.0\.1 valid until \d{4}-\d\d-\d\d`,
		`ok    upstream `+dc.imapsAddr+`: CAPABILITY .*IMAP4rev1.*`,
		`ok    vault: connected and logged in`,
		`ok    key [0-9a-f]{16} of bob \(.*, kv\): decryption self-test passed`,
		`ok    key [0-9a-f]{16} of bob \(.*\): certificate valid until 2031-\d\d-\d\d`,
		`0 failed, 0 warnings`,
	)
	code, out = doctorRun(t, vars, "--upstream", dc.imapsAddr, "--upstream-ca-file", dc.caFile, "--user", "tbob")
	if code != exitOK {
		t.Errorf("transit: exit %d, want 0", code)
	}
	wantLines(t, out, `ok    key [0-9a-f]{16} of tbob \(.*, transit\): decryption self-test passed`)

	// The same through a config file: upstream settings in [serve] (as serve reads them), Vault at the top
	// level, doctor's own user in [doctor]; STARTTLS on the plaintext port.
	cfg := writeFile(t, filepath.Join(t.TempDir(), "config.toml"), fmt.Sprintf(`vault-addr = %q
[serve]
upstream = "imap://%s"
upstream-ca-file = %q
[doctor]
user = "bob"
expiry-warn = "9000h"
`, v.Addr(), dc.imapAddr, dc.caFile))
	code, out = doctorRun(t, map[string]string{"VAULT_TOKEN": v.RootToken(), "SMIMEPROXY_CONFIG": cfg})
	if code != exitOK {
		t.Errorf("config file: exit %d, want 0", code)
	}
	wantLines(t, out,
		`ok    config: `+regexp.QuoteMeta(cfg),
		`ok    upstream `+dc.imapAddr+`: STARTTLS, TLS 1\.3`,
		`warn  upstream certificate for 127\.0\.0\.1 expires on .* \(in 36\d days\)  → tell the mail server's operator`,
		`ok    key [0-9a-f]{16} of bob .*: decryption self-test passed`,
		`0 failed, 1 warnings`,
	)
}

func TestDoctorFailures(t *testing.T) {
	// On 127.0.0.2 Dovecot refuses plaintext logins from us (LOGINDISABLED before STARTTLS).
	dc := startDovecot(t, "127.0.0.2", "")
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
	dcKey := filepath.Join(dc.dir, "key.pem")

	tests := []struct {
		name  string
		vars  map[string]string
		args  []string
		lines []string
	}{
		{"untrusted upstream certificate", good, []string{"--upstream", dc.imapsAddr},
			[]string{`FAIL  upstream ` + dc.imapsAddr + `: TLS handshake: .*certificate signed by unknown authority.*  → if the server uses a private CA, give its certificate with --upstream-ca-file.*`}},
		{"imap:// to an implicit-TLS port", good, []string{"--upstream", "imap://" + dc.imapsAddr, "--upstream-ca-file", dc.caFile, "--timeout", "2s"},
			[]string{`FAIL  upstream ` + dc.imapsAddr + `: no IMAP greeting: .*  → .*use imaps://`}},
		{"imaps:// to a STARTTLS port", good, []string{"--upstream", "imaps://" + dc.imapAddr, "--upstream-ca-file", dc.caFile, "--timeout", "2s"},
			[]string{`FAIL  upstream ` + dc.imapAddr + `: TLS handshake: .*  → this port speaks plaintext IMAP: use imap://` + dc.imapAddr + ` \(STARTTLS\)`}},
		{"imap:// with STARTTLS", good, []string{"--upstream", "imap://" + dc.imapAddr, "--upstream-ca-file", dc.caFile},
			[]string{`ok    upstream ` + dc.imapAddr + `: STARTTLS, TLS 1\.3`, `ok    upstream ` + dc.imapAddr + `: CAPABILITY .*IMAP4rev1.*`}},
		{"bad scheme", good, []string{"--upstream", "pop3://" + dc.imapAddr},
			[]string{`FAIL  upstream "pop3://.*": scheme must be imaps:// or imap://  → fix --upstream`}},
		{"plaintext server refusing logins", good, []string{"--upstream", "imap://" + fakeIMAP(t, "IMAP4rev1 LOGINDISABLED")},
			[]string{`ok    upstream .*: plaintext on loopback \(no STARTTLS offered\)`, `FAIL  upstream .*: LOGINDISABLED: .*  → use TLS.*`}},
		{"not an IMAP4rev1 server", good, []string{"--upstream", "imap://" + fakeIMAP(t, "IMAP2")},
			[]string{`FAIL  upstream .*: neither IMAP4rev1 nor IMAP4rev2 in CAPABILITY IMAP2  → .*`}},
		{"nothing listening", good, []string{"--upstream", closed},
			[]string{`FAIL  upstream ` + closed + `: cannot connect: .*connection refused  → check the host name and port.*`}},
		{"no upstream", good, nil,
			[]string{`FAIL  upstream: not configured  → set upstream = .*`}},
		{"no vault address", map[string]string{"VAULT_TOKEN": "x"}, []string{"--upstream", dc.imapsAddr, "--upstream-ca-file", dc.caFile},
			[]string{`FAIL  vault: .*no vault address.*  → set vault-addr in the config file, or VAULT_ADDR`}},
		{"vault unreachable", map[string]string{"VAULT_ADDR": "http://" + closed, "VAULT_TOKEN": "x"}, []string{"--upstream", dc.imapsAddr, "--upstream-ca-file", dc.caFile, "--vault-timeout", "2s"},
			[]string{`FAIL  vault: .*  → start Vault or fix vault-addr / VAULT_ADDR.*`}},
		{"bad token", map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": "hvs.not-a-token"}, []string{"--upstream", dc.imapsAddr, "--upstream-ca-file", dc.caFile},
			[]string{`FAIL  vault: .*  → log in again \(vault login\).*`}},
		{"user without keys", good, []string{"--upstream", dc.imapsAddr, "--upstream-ca-file", dc.caFile, "--user", "nobody"},
			[]string{`FAIL  keys of nobody: none in Vault  → import your S/MIME key: smimeproxy keys import --user nobody .*`}},
		{"no user", good, []string{"--upstream", dc.imapsAddr, "--upstream-ca-file", dc.caFile},
			[]string{`warn  keys: not checked \(no user given\)  → .*`, `0 failed, 1 warnings`}},
		{"client TLS key does not match", good, []string{"--upstream", dc.imapsAddr, "--upstream-ca-file", dc.caFile, "--tls-cert", goodCert, "--tls-key", dcKey},
			[]string{`FAIL  client TLS: tlscert: certificate and private key do not match .*  → give a matching .*`}},
		{"client TLS ok", good, []string{"--upstream", dc.imapsAddr, "--upstream-ca-file", dc.caFile, "--tls-cert", goodCert, "--tls-key", otherKey},
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

func TestParseUpstream(t *testing.T) {
	for _, tt := range []struct {
		in, addr string
		implicit bool
	}{
		{"imaps://mail.example.org", "mail.example.org:993", true},
		{"imaps://mail.example.org:1993/", "mail.example.org:1993", true},
		{"IMAP://mail.example.org", "mail.example.org:143", false},
		{"imap://[::1]:1143", "[::1]:1143", false},
		{"mail.example.org", "mail.example.org:993", true},
		{"mail.example.org:143", "mail.example.org:143", false},
		{"127.0.0.1:1993", "127.0.0.1:1993", true},
	} {
		got, err := parseUpstream(tt.in)
		if err != nil || got.addr != tt.addr || got.implicit != tt.implicit {
			t.Errorf("parseUpstream(%q) = %+v, %v; want addr %s implicit %v", tt.in, got, err, tt.addr, tt.implicit)
		}
	}
	for _, in := range []string{"pop3://x", "imaps://", "imaps://u@host", "imaps://host/INBOX", "imap://host?x=1"} {
		if _, err := parseUpstream(in); err == nil {
			t.Errorf("parseUpstream(%q) succeeded", in)
		}
	}
}

func TestParseRecipientKey(t *testing.T) {
	for _, s := range []string{"ski:0a0b", "iss:3000:1f"} {
		id, ok := parseRecipientKey(s)
		if !ok || id.Key() != s {
			t.Errorf("parseRecipientKey(%q) = %v, %v; Key() = %q", s, id, ok, id.Key())
		}
	}
	for _, s := range []string{"", "ski:", "ski:zz", "iss:3000", "iss:zz:1", "iss:30:xyz", "other:1"} {
		if _, ok := parseRecipientKey(s); ok {
			t.Errorf("parseRecipientKey(%q) ok", s)
		}
	}
}
