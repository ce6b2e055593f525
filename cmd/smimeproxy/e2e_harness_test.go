package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// The end-to-end tests run 'smimeproxy serve' in-process between a real Dovecot (upstream) and real clients
// (Python imaplib, mbsync), with users' keys imported into a real Vault dev server by 'smimeproxy keys import'.

const (
	cmsKeys     = "../../crypto/cms/testdata/keys/"
	cmsFixtures = "../../crypto/cms/testdata/fixtures/"
	pyScript    = "../../tests/clients/imaplib_script.py"
)

// e2eUsers are the Dovecot accounts: bob holds the Thunderbird Bob key and the cms test keys rsa, p256, p384
// and p521; alice holds Alice.p12 (a recipient of nothing seeded); carol holds rsa2; dave has no keys; oracle
// holds plaintext copies of what the proxy served, to ask Dovecot what it answers for the same bytes.
var e2eUsers = map[string]string{"bob": "bob-pw", "alice": "alice-pw", "carol": "carol-pw", "dave": "dave-pw", "oracle": "oracle-pw"}

// e2eWorld is one Dovecot and one Vault with keys imported.
type e2eWorld struct {
	t       *testing.T
	d       *testenv.Dovecot
	v       *testenv.Vault
	vars    map[string]string
	secrets []string // must never appear in any output of smimeproxy
}

func newE2EWorld(t *testing.T) *e2eWorld {
	t.Helper()
	w := &e2eWorld{t: t}
	// 50 concurrent sessions of one user from 127.0.0.1: above Dovecot's default of 10 per user and IP.
	w.d = testenv.StartDovecot(t, testenv.DovecotOptions{Users: e2eUsers,
		Extra: "protocol imap {\n  mail_max_userip_connections = 200\n}\n"})
	w.v = testenv.StartVault(t)
	w.vars = map[string]string{"VAULT_ADDR": w.v.Addr(), "VAULT_TOKEN": w.v.RootToken(), "HOME": t.TempDir(), "P12_PW": "nss"}
	w.secrets = []string{w.v.RootToken(), "PRIVATE KEY", "nss\n"}
	for _, u := range []string{"bob", "alice", "carol", "dave"} {
		w.secrets = append(w.secrets, e2eUsers[u])
	}
	// Key material: a window of every private key file's base64 (PEM) and of the PKCS#12 keys.
	for _, k := range []string{"rsa", "rsa2", "p256", "p384", "p521"} {
		w.secrets = append(w.secrets, keyWindow(t, cmsKeys+k+".key"))
	}
	for _, p := range []string{"Bob.p12", "Alice.p12"} {
		_, key := parseP12(t, p)
		w.secrets = append(w.secrets, keySecrets(t, key)...)
	}
	w.keys("bob", "--password-env", "P12_PW", corpus+"Bob.p12")
	for _, k := range []string{"rsa", "p256", "p384", "p521"} {
		w.keys("bob", cmsKeys+k+".key", cmsKeys+k+".pem")
	}
	w.keys("alice", "--password-env", "P12_PW", corpus+"Alice.p12")
	w.keys("carol", cmsKeys+"rsa2.key", cmsKeys+"rsa2.pem")
	return w
}

// keyWindow returns 40 characters from the middle of a PEM private key's base64.
func keyWindow(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 4 {
		t.Fatalf("%s: too short for a key", path)
	}
	return strings.TrimSpace(lines[2])[:40]
}

func keySecrets(t *testing.T, key any) []string {
	t.Helper()
	k := &keysEnv{t: t}
	k.addKeySecrets(key)
	return k.secrets
}

// keys runs 'smimeproxy keys import --user user args...' and fails the test unless it succeeds.
func (w *e2eWorld) keys(user string, args ...string) {
	w.t.Helper()
	var out, errb bytes.Buffer
	env := &cmdEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(s string) string { return w.vars[s] }}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if code := runMain(ctx, env, append([]string{"keys", "import", "--user", user}, args...)); code != exitOK {
		w.t.Fatalf("keys import --user %s %v = %d\n%s%s", user, args, code, out.String(), errb.String())
	}
	w.checkSecrets("keys import", out.String()+errb.String())
}

// checkSecrets fails the test when s holds a password, the Vault token or key material.
func (w *e2eWorld) checkSecrets(what, s string) {
	w.t.Helper()
	for _, sec := range w.secrets {
		if strings.Contains(s, sec) {
			w.t.Errorf("%s output contains a secret (%.6s...)", what, sec)
		}
	}
}

// serveProc is one in-process 'smimeproxy serve'.
type serveProc struct {
	addr    string // IMAP listener
	metrics string // --metrics-listen address, when asked for
	stderr  *lockedBuffer
	stop    func() // cancels and waits (bounded); idempotent
}

// serve starts 'smimeproxy serve' against upstream (imaps://...) with args added, logging at debug level to a
// buffer, and stops it at cleanup.
func (w *e2eWorld) serve(upstream string, args ...string) *serveProc {
	w.t.Helper()
	env, _, stderr := demoEnv(w.vars)
	base := []string{"--listen", "127.0.0.1:0", "--upstream", upstream, "--upstream-ca-file", w.d.CAFile(),
		"--log-level", "debug", "--vault-timeout", "3s"}
	p := startServe(w.t, env, stderr, append(base, args...)...)
	p.stderr = stderr
	return p
}

// startServe runs 'smimeproxy serve args...' in-process with env until it listens, and stops it at cleanup
// (or earlier with stop, which expects exit 0). stderr is what env writes to, shown when the test fails.
func startServe(t *testing.T, env *cmdEnv, stderr fmt.Stringer, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{}
	store := false
	for i, a := range args {
		if a == "--metrics-listen" && i+1 < len(args) {
			p.metrics = args[i+1]
		}
		store = store || a == "--metadata-store" || strings.HasPrefix(a, "--metadata-store=")
	}
	// Never the user's own ~/.cache: the default store (read when the flag set is made) goes to a temporary
	// XDG_CACHE_HOME, unless the test already pointed it into the temporary directory itself.
	if !store && !strings.HasPrefix(os.Getenv("XDG_CACHE_HOME"), os.TempDir()) {
		t.Setenv("XDG_CACHE_HOME", t.TempDir())
	}
	fs, sf := newServeFlagSet()
	addrCh := make(chan string, 1)
	sf.onListen = func(a string) { addrCh <- a }
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() { code <- sf.run(ctx, env, fs, args) }()
	select {
	case p.addr = <-addrCh:
	case c := <-code:
		cancel()
		t.Fatalf("serve exited %d: %s", c, stderr)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("serve did not listen within 30 s")
	}
	stopped := false
	p.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case c := <-code:
			if c != exitOK {
				t.Errorf("serve exit %d, want 0: %s", c, tailString(stderr.String(), 4096))
			}
		case <-time.After(40 * time.Second):
			t.Error("serve did not stop within 40 s")
		}
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("serve log (last 4 KB):\n%s", tailString(stderr.String(), 4096))
		}
	})
	return p
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// pyOp is one operation of tests/clients/imaplib_script.py.
type pyOp map[string]any

func opSelect(mailbox string, readonly bool) pyOp {
	return pyOp{"op": "select", "mailbox": mailbox, "readonly": readonly}
}
func opFetch(set, items string) pyOp { return pyOp{"op": "fetch", "set": set, "items": items} }
func opSearch(criteria ...string) pyOp {
	return pyOp{"op": "search", "criteria": criteria}
}
func opAppend(mailbox string, msg []byte) pyOp {
	return pyOp{"op": "append", "mailbox": mailbox, "message": base64.StdEncoding.EncodeToString(msg)}
}

// pyResult is the outcome of one pyOp.
type pyResult struct {
	Typ   string     `json:"typ"`
	Data  [][]string `json:"data"`
	Error string     `json:"error"`
}

// runPy runs ops in one imaplib session as user against addr and returns one result per op run.
func runPy(t *testing.T, addr, user, password string, ops []pyOp) []pyResult {
	t.Helper()
	testenv.LookPath(t, "python3")
	res, err := runPyErr(addr, user, password, ops)
	if err != nil {
		t.Fatalf("imaplib as %s: %v", user, err)
	}
	return res
}

func runPyErr(addr, user, password string, ops []pyOp) ([]pyResult, error) {
	host, port, _ := net.SplitHostPort(addr)
	spec, _ := json.Marshal(map[string]any{"host": host, "port": port, "user": user, "password": password, "ops": ops})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", pyScript)
	cmd.Stdin = bytes.NewReader(spec)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("python3 %s: %v\n%s", pyScript, err, stderr.String())
	}
	var r struct {
		Results []pyResult `json:"results"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("imaplib script output: %v", err)
	}
	return r.Results, nil
}

// messages reassembles a FETCH result into one byte string per message response, literals inlined after
// their {n} announcement: `3 (UID 7 BODY[] {12}\r\n<12 bytes>)`.
func (r pyResult) messages() [][]byte {
	var msgs [][]byte
	var cur []byte
	for _, it := range r.Data {
		var head, lit []byte
		head, _ = base64.StdEncoding.DecodeString(it[1])
		if it[0] == "t" {
			lit, _ = base64.StdEncoding.DecodeString(it[2])
		}
		if fetchStart.Match(head) && cur != nil {
			msgs = append(msgs, cur)
			cur = nil
		}
		cur = append(cur, head...)
		if it[0] == "t" {
			cur = append(cur, "\r\n"...)
			cur = append(cur, lit...)
		}
	}
	if cur != nil {
		msgs = append(msgs, cur)
	}
	return msgs
}

var fetchStart = regexp.MustCompile(`^\d+ \(`)

// literal returns the first literal of a one-message FETCH result (e.g. BODY.PEEK[]), failing the test when
// there is none.
func (r pyResult) literal(t *testing.T) []byte {
	t.Helper()
	for _, it := range r.Data {
		if it[0] == "t" {
			b, _ := base64.StdEncoding.DecodeString(it[2])
			return b
		}
	}
	t.Fatalf("no literal in FETCH result %v (typ %s, error %q)", r.Data, r.Typ, r.Error)
	return nil
}

// text is the result's data as one string (SEARCH, APPEND answers).
func (r pyResult) text() string {
	var sb strings.Builder
	for _, it := range r.Data {
		b, _ := base64.StdEncoding.DecodeString(it[1])
		sb.Write(b)
		sb.WriteByte(' ')
	}
	return sb.String()
}

// fetchItem strips a one-message, one-item FETCH response down to the item: `3 (UID 7 RFC822.SIZE 12)` and
// `3 (RFC822.SIZE 12 UID 7)` both give `RFC822.SIZE 12`.
func fetchItem(msg []byte) string {
	s := fetchStart.ReplaceAllString(string(msg), "")
	s = strings.TrimSuffix(s, ")")
	s = uidItem.ReplaceAllString(s, "")
	return strings.TrimSpace(s)
}

var uidItem = regexp.MustCompile(`(^|\s)UID \d+(\s|$)`)

// httpGet returns the body of a GET on a loopback URL.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b.String())
	}
	return b.String()
}

// runOpenSSL runs openssl with args and returns its stdout; it fails the test on error.
func runOpenSSL(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.LookPath(t, "openssl"), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// scanMaildirs returns the files under user's Maildir (every mailbox) whose contents hold any of markers.
func scanMaildirs(t *testing.T, d *testenv.Dovecot, user string, markers []string) []string {
	t.Helper()
	var hits []string
	root := d.MaildirPath(user)
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range markers {
			if bytes.Contains(b, []byte(m)) {
				hits = append(hits, fmt.Sprintf("%s: %q", strings.TrimPrefix(p, root), m))
			}
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("scanning %s: %v", root, err)
	}
	return hits
}
