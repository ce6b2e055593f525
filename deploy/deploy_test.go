package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found: %v", err)
	}
	return root
}

// parseUnit reads a systemd unit file as INI: section → key → values (keys may repeat).
func parseUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	root := repoRoot(t)
	unit := filepath.Join(root, "deploy", "systemd", "smimeproxy.service")
	u := parseUnit(t, unit)
	want := map[string]map[string]string{
		"Unit": {"Description": "smimeproxy: IMAP proxy with transparent S/MIME decryption"},
		"Service": {
			"ExecStart":               "%h/.local/bin/smimeproxy serve --config %h/.config/smimeproxy/config.toml",
			"Restart":                 "on-failure",
			"NoNewPrivileges":         "yes",
			"PrivateTmp":              "yes",
			"ProtectSystem":           "strict",
			"MemoryDenyWriteExecute":  "yes",
			"LimitCORE":               "0",
			"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		},
		"Install": {"WantedBy": "default.target"},
	}
	for sec, kv := range want {
		for k, v := range kv {
			if got := u[sec][k]; len(got) != 1 || got[0] != v {
				t.Errorf("[%s] %s = %q, want %q", sec, k, got, v)
			}
		}
	}
	if _, ok := u["Service"]["ReadWritePaths"]; ok {
		t.Error("unit grants write access; smimeproxy writes nothing to disk")
	}
	if _, ok := u["Service"]["User"]; ok {
		t.Error("User= in a user unit")
	}

	// systemd's own check, in user mode (%h = a temporary home holding an executable at the ExecStart path;
	// /bin/true stands in for the binary: verify checks it is executable, not what it does).
	sa := testenv.LookPath(t, "systemd-analyze")
	home := t.TempDir()
	run := filepath.Join(home, "run")
	if err := os.MkdirAll(filepath.Join(home, ".local", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	bin, _ := os.ReadFile(truePath)
	if err := os.WriteFile(filepath.Join(home, ".local", "bin", "smimeproxy"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	verify := func() ([]byte, error) {
		cmd := exec.Command(sa, "--user", "verify", unit)
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_RUNTIME_DIR="+run, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
		return cmd.CombinedOutput()
	}
	out, err := verify()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze --user verify: %v\n%s", err, out)
	}
	// And it notices a missing binary (so the check above is meaningful).
	os.Remove(filepath.Join(home, ".local", "bin", "smimeproxy"))
	if out, err := verify(); err == nil || !strings.Contains(string(out), "is not executable") {
		t.Errorf("systemd-analyze verify without the binary: %v\n%s", err, out)
	}
}

// TestComposeDovecot runs the compose stack's Dovecot config and seed script outside a container: the config
// with its container paths, user and port rewritten (each rewrite must match, so drift fails here), the seed
// script as is. A real client (Python imaplib) then logs in as bob and finds the seeded S/MIME mail.
func TestComposeDovecot(t *testing.T) {
	testenv.RequireIntegration(t, "Dovecot (run as root, as in the container)")
	if os.Getuid() != 0 {
		t.Fatal("this test runs Dovecot as root, as the container does")
	}
	// Mail is owned by nobody here (Dovecot refuses uid 0 for mail; the image has its own vmail user).
	root := repoRoot(t)
	dir := t.TempDir()
	// Dovecot's auth process (user dovecot) must reach the passwd file: open the temp dir and its parent.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := os.ReadFile(filepath.Join(root, "deploy", "compose", "dovecot", "dovecot.conf"))
	if err != nil {
		t.Fatal(err)
	}
	users, err := os.ReadFile(filepath.Join(root, "deploy", "compose", "dovecot", "users"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), users, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := string(conf)
	for _, r := range [][2]string{
		// 127.0.0.2: Dovecot treats clients from its own address as secure and would allow plaintext logins;
		// our client comes from 127.0.0.1, like smimeproxy from another container.
		{"listen = *\n", "listen = 127.0.0.2\n"},
		{"port = 143\n", fmt.Sprintf("port = %d\n", port)},
		{"/etc/dovecot/users", filepath.Join(dir, "users")},
		{"uid=vmail gid=vmail home=/srv/mail/%n", "uid=nobody gid=nogroup home=" + dir + "/mail/%n"},
		{"first_valid_uid = 5000\n", "first_valid_uid = 0\n"},
		{"first_valid_gid = 5000\n", "first_valid_gid = 0\n"},
		{"service imap-login {\n", "service imap-login {\n  chroot =\n"},
		{"ssl_cert = </tls/", "ssl_cert = <" + dir + "/tls/"},
		{"ssl_key = </tls/", "ssl_key = <" + dir + "/tls/"},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("dovecot.conf no longer contains %q: update this test", r[0])
		}
		s = strings.Replace(s, r[0], r[1], 1)
	}
	s += fmt.Sprintf("base_dir = %[1]s/run\nstate_dir = %[1]s/state\nservice anvil {\n  chroot =\n}\n", dir)
	cfg := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "deploy", "compose", "dovecot", "seed.sh"))
	cmd.Env = append(os.Environ(), "SEED_DIR="+filepath.Join(root, "testdata", "thunderbird"), "MAIL_OWNER=nobody", "MAIL_GROUP=nogroup",
		"MAIL_ROOT="+filepath.Join(dir, "mail"), "DOVECOT_CONF="+cfg, "TLS_DIR="+filepath.Join(dir, "tls"))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // exec'd: this is Dovecot's master
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	addr := fmt.Sprintf("127.0.0.2:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecot did not listen on %s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Before STARTTLS logins are refused; after it the certificate chain verifies against the generated PEM (as
	// smimeproxy's upstream CA file); the name "dovecot" is checked with Go below.
	py := `
import imaplib, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
c = imaplib.IMAP4("127.0.0.2", port, timeout=10)
print("PRE", "LOGINDISABLED" in c.capabilities, "STARTTLS" in c.capabilities)
try:
    c.login("bob", "bob-demo-password")
    print("PLAINLOGIN accepted")
except imaplib.IMAP4.error:
    print("PLAINLOGIN refused")
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False  # connected by IP 127.0.0.2; chain still verified (CERT_REQUIRED)
c.starttls(ssl_context=ctx)
print("CERT", c.sock.getpeercert()["subjectAltName"])
c.login("bob", "bob-demo-password")
typ, data = c.select("INBOX", readonly=True)
print("EXISTS", data[0].decode())
typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])")
print("SMIME", sum(1 for d in data if isinstance(d, tuple) and b"pkcs7-mime" in d[1].lower()))
c.logout()
`
	ca := filepath.Join(dir, "tls", "dovecot.pem")
	out, err := exec.Command(testenv.LookPath(t, "python3"), "-c", py, fmt.Sprint(port), ca).CombinedOutput()
	if err != nil {
		t.Fatalf("imaplib: %v\n%s\ndovecot:\n%s", err, out, logs.String())
	}
	// Four seeded messages; three are encrypted at the top level (the fourth is signed only).
	want := "PRE True True\nPLAINLOGIN refused\nCERT (('DNS', 'dovecot'), ('DNS', 'localhost'), ('IP Address', '127.0.0.1'))\nEXISTS 4\nSMIME 3"
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("imaplib saw:\n%s\nwant:\n%s", got, want)
	}
	// The key stays private; the certificate is readable by smimeproxy's user.
	for name, mode := range map[string]os.FileMode{"dovecot.key": 0o600, "dovecot.pem": 0o644} {
		st, err := os.Stat(filepath.Join(dir, "tls", name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, %v; want %v", name, st.Mode().Perm(), err, mode)
		}
	}
	// The doctor's view (Go's verifier) of the same certificate for the name smimeproxy uses.
	pemData, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatal("generated dovecot.pem has no certificate")
	}
	blk, _ := pem.Decode(pemData)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "dovecot", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("Go does not accept the generated certificate for dovecot: %v", err)
	}
	if leaf.IsCA {
		t.Error("generated certificate is a CA")
	}
	if !strings.Contains(logs.String(), "seed: 4 messages in bob's INBOX") {
		t.Errorf("seed output missing:\n%s", logs.String())
	}
}

// dockerIgnored reports whether rel (slash-separated, relative to the build context) or one of its parent
// directories matches a .dockerignore pattern. Supports what our .dockerignore uses: plain paths, "*" within a
// component, and a leading "**/" (any number of directories).
func dockerIgnored(patterns []string, rel string) bool {
	parts := strings.Split(rel, "/")
	for n := 1; n <= len(parts); n++ { // rel's ancestors, then rel
		a := parts[:n]
		for _, p := range patterns {
			if sub, ok := strings.CutPrefix(p, "**/"); ok {
				for i := range a {
					if m, _ := filepath.Match(sub, strings.Join(a[i:], "/")); m {
						return true
					}
				}
			} else if m, _ := filepath.Match(p, strings.Join(a, "/")); m {
				return true
			}
		}
	}
	return false
}

// dockerignorePatterns reads the repository's .dockerignore patterns.
func dockerignorePatterns(t *testing.T, root string) []string {
	t.Helper()
	ign, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(ign), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(l, "/"))
		}
	}
	return patterns
}

// TestDockerIgnored: the .dockerignore matcher TestDockerBuildContext relies on keeps what the build needs
// and drops tests, test data, docs and the Vault build module.
func TestDockerIgnored(t *testing.T) {
	patterns := dockerignorePatterns(t, repoRoot(t))
	for _, tt := range []struct {
		path string
		want bool
	}{{".git/config", true}, {"crypto/cms/testdata/x.eml", true}, {"proxy/fetch_test.go", true}, {"tools/vault/main.go", true},
		{"cmd/smimeproxy/main.go", false}, {"go.sum", false}, {"deploy/compose/empty.toml", false}} {
		if got := dockerIgnored(patterns, tt.path); got != tt.want {
			t.Errorf("dockerIgnored(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// TestDockerBuildContext builds the binary from exactly the files the Dockerfile's build context keeps (after
// .dockerignore), the way the Dockerfile's build stage does, so an excluded file the build needs is caught
// without a Docker engine. A full build from a copy of the tree: integration tier (CI) only.
func TestDockerBuildContext(t *testing.T) {
	testenv.RequireIntegration(t, "a full go build of the Docker build context")
	root := repoRoot(t)
	patterns := dockerignorePatterns(t, root)
	dst := t.TempDir()
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if dockerIgnored(patterns, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.mod", "go.sum", "deploy/compose/empty.toml", "cmd/smimeproxy/main.go"} {
		if _, err := os.Stat(filepath.Join(dst, f)); err != nil {
			t.Errorf("build context lacks %s, which the Dockerfile needs", f)
		}
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(t.TempDir(), "smimeproxy"), "./cmd/smimeproxy")
	cmd.Dir = dst
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in the Docker build context: %v\n%s", err, out)
	}
}
