package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// clientsWorld is 'smimeproxy serve' with its defaults on loopback (STARTTLS offered with the certificate it
// keeps in Vault) in front of a real Dovecot where Bob has one encrypted and one plain message, and the
// certificate as 'smimeproxy tls export' wrote it.
type clientsWorld struct {
	*e2eWorld
	p        *serveProc
	certFile string
	secret   string // a word only inside the encrypted message
}

func newClientsWorld(t *testing.T) *clientsWorld {
	t.Helper()
	w := &e2eWorld{t: t}
	w.d = testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"bob": "bob-pw"}})
	w.v = testenv.StartVault(t)
	w.vars = map[string]string{"VAULT_ADDR": w.v.Addr(), "VAULT_TOKEN": w.v.RootToken(), "HOME": t.TempDir()}
	w.secrets = []string{w.v.RootToken(), "PRIVATE KEY", "bob-pw", keyWindow(t, cmsKeys+"rsa.key")}
	w.keys("bob", cmsKeys+"rsa.key", cmsKeys+"rsa.pem")
	cw := &clientsWorld{e2eWorld: w, secret: "xylophone"}
	entity := []byte("Content-Type: text/plain; charset=utf-8\r\n\r\nThe secret word is " + cw.secret + ".\r\n")
	enc := p7mMessage(strings.Replace(e2eOuter, "Subject: e2e test", "Subject: encrypted note", 1),
		envelopeTo(t, entity, cmsKeys+"rsa.pem", "aes-256-cbc"), "enveloped-data")
	date := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	w.d.Append("bob", "INBOX", msg2("plain hello", "nothing secret here"), nil, date)
	w.d.Append("bob", "INBOX", enc, nil, date.Add(time.Hour))
	cw.p = w.serve("imaps://" + w.d.TLSAddr())

	env, out, errb := demoEnv(w.vars)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if code := runMain(ctx, env, []string{"tls", "export", "--listen", cw.p.addr}); code != exitOK {
		t.Fatalf("tls export = %d: %s", code, errb)
	}
	blk, _ := pem.Decode([]byte(out.String()))
	if blk == nil || blk.Type != "CERTIFICATE" || strings.Contains(out.String(), "PRIVATE KEY") {
		t.Fatalf("tls export did not print the certificate alone:\n%.200s", out)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || leaf.IsCA || leaf.VerifyHostname("127.0.0.1") != nil {
		t.Fatalf("exported certificate: %v (CA %v)", err, leaf != nil && leaf.IsCA)
	}
	cw.certFile = filepath.Join(w.vars["HOME"], "proxy.pem")
	if err := os.WriteFile(cw.certFile, []byte(out.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// The fingerprint on stderr is the one serve logged, and the certificate is the one stored in Vault.
	fp := strings.TrimSpace(strings.TrimPrefix(errb.String()[strings.Index(errb.String(), "sha256 fingerprint: "):], "sha256 fingerprint: "))
	if !strings.Contains(cw.p.stderr.String(), fp) || len(fp) != 95 {
		t.Errorf("tls export fingerprint %q is not the one serve logged:\n%s", fp, tailString(cw.p.stderr.String(), 2048))
	}
	return cw
}

// msg2 is a small plain message.
func msg2(subject, body string) []byte {
	return []byte("From: Carol <carol@example.com>\r\nTo: Bob <bob@example.com>\r\nSubject: " + subject +
		"\r\nDate: Thu, 26 Nov 2026 11:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.com>\r\n\r\n" + body + "\r\n")
}

// TestClientNeomutt: neomutt with its default TLS settings (ssl_starttls=yes) and a muttrc holding only the
// account and the exported certificate, run in tmux, opens Bob's INBOX through the proxy over STARTTLS, shows
// the decrypted text of the encrypted message, and a server-side body search (=B) finds it.
func TestClientNeomutt(t *testing.T) {
	for _, bin := range []string{"neomutt", "tmux"} {
		testenv.LookPath(t, bin)
	}
	cw := newClientsWorld(t)
	// A message Bob has no key for: served with the explanation (serve --undecryptable=explain, the default).
	foreign := p7mMessage(strings.Replace(e2eOuter, "Subject: e2e test", "Subject: not for bob", 1),
		envelopeTo(t, []byte("Content-Type: text/plain\r\n\r\nfor rsa2 only\r\n"), cmsKeys+"rsa2.pem", "aes-256-cbc"),
		"enveloped-data")
	cw.d.Append("bob", "INBOX", foreign, nil, time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	home := t.TempDir()
	muttrc := filepath.Join(home, "muttrc")
	conf := fmt.Sprintf("set folder = \"imap://bob@%s/\"\nset spoolfile = \"+INBOX\"\nset imap_pass = \"bob-pw\"\nset certificate_file = \"%s\"\n",
		cw.p.addr, cw.certFile)
	if err := os.WriteFile(muttrc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := fmt.Sprintf("smimeproxy-test-%d", os.Getpid())
	tmux := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "tmux", append([]string{"-L", sock, "-f", "/dev/null"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "TERM=xterm-256color")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	tmux("new-session", "-d", "-s", "mutt", "-x", "160", "-y", "40",
		"env HOME="+home+" TERM=xterm-256color neomutt -n -F "+muttrc)
	t.Cleanup(func() { exec.Command("tmux", "-L", sock, "kill-server").Run() })
	screen := func() string { return tmux("capture-pane", "-p", "-t", "mutt") }
	// waitFor polls the screen until it shows want (and, when set, no longer shows gone).
	waitFor := func(what, want, gone string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := screen()
			if strings.Contains(s, want) && (gone == "" || !strings.Contains(s, gone)) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("neomutt: %s: %q not on screen within 30 s:\n%s", what, want, s)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor("INBOX", "encrypted note", "")
	waitFor("INBOX", "plain hello", "")
	// Limit to the encrypted message by subject, open it: the decrypted text is on screen.
	tmux("send-keys", "-t", "mutt", "l", "~s encrypted", "Enter")
	waitFor("limit by subject", "encrypted note", "plain hello")
	tmux("send-keys", "-t", "mutt", "Enter")
	s := waitFor("pager", "The secret word is "+cw.secret, "")
	if !strings.Contains(s, "X-Smimeproxy-Status: decrypted") {
		t.Errorf("pager without the proxy's status header:\n%s", s)
	}
	tmux("send-keys", "-t", "mutt", "q")
	// The undecryptable message: the explanation, its reason and the attachment, no key prompt.
	tmux("send-keys", "-t", "mutt", "l", "~s bob", "Enter")
	waitFor("limit to the undecryptable message", "not for bob", "encrypted note")
	tmux("send-keys", "-t", "mutt", "Enter")
	s = waitFor("pager, undecryptable", "smimeproxy could not decrypt this message (reason: no-matching-key)", "")
	for _, want := range []string{"X-Smimeproxy-Status: undecryptable; reason=no-matching-key", "smime.p7m"} {
		if !strings.Contains(s, want) {
			t.Errorf("undecryptable message: %q not on screen:\n%s", want, s)
		}
	}
	t.Logf("neomutt, undecryptable message:\n%s", s)
	tmux("send-keys", "-t", "mutt", "q")
	// Server-side body search (IMAP SEARCH BODY, rewritten by the proxy over the served copies).
	tmux("send-keys", "-t", "mutt", "l", "all", "Enter")
	waitFor("limit reset", "plain hello", "")
	tmux("send-keys", "-t", "mutt", "l", "=B "+cw.secret, "Enter")
	waitFor("server body search", "encrypted note", "plain hello")
	tmux("send-keys", "-t", "mutt", "q")
	if log := cw.p.stderr.String(); !strings.Contains(log, "client connection upgraded to TLS") {
		t.Errorf("neomutt did not use STARTTLS (no upgrade in the serve log):\n%s", tailString(log, 2048))
	}
	cw.checkSecrets("serve log", cw.p.stderr.String())
}

// cacheHomeAtStart is XDG_CACHE_HOME as the test binary found it, where scripts/setup.sh installs things.
var cacheHomeAtStart = os.Getenv("XDG_CACHE_HOME")

// imapflowDir is where scripts/setup.sh installed imapflow (npm ci into a cache named after the lock file).
func imapflowDir(t *testing.T) string {
	t.Helper()
	lock, err := os.ReadFile("../../tests/clients/imapflow/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	cache := cacheHomeAtStart // not the temporary one startServe sets
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(cache, "smimeproxy", "imapflow-"+hex.EncodeToString(sum[:])[:16])
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "imapflow")); err != nil {
		t.Fatalf("imapflow not installed in %s (run scripts/setup.sh)", dir)
	}
	return dir
}

// TestClientImapflow: imapflow (Node.js) connects with STARTTLS trusting the exported certificate, lists,
// fetches envelope, bodyStructure and source of both messages (the encrypted one decrypted), downloads the
// decrypted text part, finds it with a body search and hears of new mail while idling.
func TestClientImapflow(t *testing.T) {
	testenv.RequireIntegration(t, "Dovecot, the Vault dev server and imapflow (npm ci by scripts/setup.sh)")
	testenv.LookPath(t, "node")
	dir := imapflowDir(t)
	cw := newClientsWorld(t)
	host, port, _ := strings.Cut(cw.p.addr, ":")
	spec, _ := json.Marshal(map[string]any{"host": host, "port": atoi(t, port), "user": "bob", "pass": "bob-pw",
		"ca": cw.certFile, "word": cw.secret, "part": "1"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "../../tests/clients/imapflow/client.cjs", string(spec))
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("imapflow: %v\n%s", err, stderr.String())
	}
	var res struct {
		Secure       bool     `json:"secure"`
		TLS          string   `json:"tls"`
		Capabilities []string `json:"capabilities"`
		Mailboxes    []string `json:"mailboxes"`
		Messages     []struct {
			UID     uint32   `json:"uid"`
			Subject string   `json:"subject"`
			Type    string   `json:"type"`
			Source  string   `json:"source"`
			From    []string `json:"from"`
		} `json:"messages"`
		Part       string   `json:"part"`
		PartUID    uint32   `json:"partUID"`
		Search     []uint32 `json:"search"`
		IdleExists int      `json:"idleExists"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("imapflow output: %v\n%s", err, out)
	}
	if !res.Secure || !strings.HasPrefix(res.TLS, "TLSv1.") {
		t.Errorf("imapflow did not upgrade with STARTTLS: secure=%v tls=%q", res.Secure, res.TLS)
	}
	for _, c := range res.Capabilities {
		if c == "STARTTLS" {
			t.Error("STARTTLS still advertised after login over TLS")
		}
	}
	if !contains(res.Mailboxes, "INBOX") {
		t.Errorf("LIST: %v", res.Mailboxes)
	}
	if len(res.Messages) != 2 {
		t.Fatalf("FETCH: %d messages, want 2", len(res.Messages))
	}
	enc := res.Messages[1]
	if enc.Subject != "encrypted note" || enc.Type != "text/plain" || !strings.Contains(enc.Source, "The secret word is "+cw.secret) ||
		!strings.Contains(enc.Source, "X-Smimeproxy-Status: decrypted") || len(enc.From) != 1 || enc.From[0] != "alice@example.com" {
		t.Errorf("encrypted message through imapflow: subject %q, type %q, from %v, source %.300q", enc.Subject, enc.Type, enc.From, enc.Source)
	}
	if res.Messages[0].Subject != "plain hello" || res.Messages[0].Type != "text/plain" {
		t.Errorf("plain message: %q %q", res.Messages[0].Subject, res.Messages[0].Type)
	}
	if res.PartUID != enc.UID || !strings.Contains(res.Part, "The secret word is "+cw.secret) {
		t.Errorf("download of part 1 of UID %d: %q", res.PartUID, res.Part)
	}
	if len(res.Search) != 1 || res.Search[0] != enc.UID {
		t.Errorf("SEARCH BODY %s = %v, want [%d]", cw.secret, res.Search, enc.UID)
	}
	if res.IdleExists != 3 {
		t.Errorf("EXISTS during IDLE = %d, want 3", res.IdleExists)
	}
	if log := cw.p.stderr.String(); !strings.Contains(log, "client connection upgraded to TLS") {
		t.Errorf("no STARTTLS upgrade in the serve log")
	}
	cw.checkSecrets("serve log", cw.p.stderr.String())
}

// TestClientMbsyncConfig: the mbsync account 'smimeproxy client-config mbsync' prints works as it is
// (STARTTLS, the exported certificate) once a password line is added: mbsync pulls the decrypted message.
func TestClientMbsyncConfig(t *testing.T) {
	cw := newClientsWorld(t)
	home := cw.vars["HOME"]
	env, out, errb := demoEnv(cw.vars)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code := runMain(ctx, env, []string{"client-config", "mbsync", "--listen", cw.p.addr, "--user", "bob", "--cert-file", cw.certFile}); code != exitOK {
		t.Fatalf("client-config mbsync = %d: %s", code, errb)
	}
	conf := strings.Replace(out.String(), "# PassCmd", "Pass bob-pw\n# PassCmd", 1)
	if !strings.Contains(conf, "SSLType STARTTLS") {
		t.Fatalf("mbsync config without STARTTLS:\n%s", conf)
	}
	cfg := filepath.Join(home, "mbsyncrc")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(home, "Mail", "smimeproxy"), 0o700)
	cmd := exec.CommandContext(ctx, testenv.LookPath(t, "mbsync"), "-c", cfg, "-a")
	cmd.Env = append(os.Environ(), "HOME="+home)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mbsync: %v\n%s", err, b)
	}
	files, _ := filepath.Glob(filepath.Join(home, "Mail", "smimeproxy", "INBOX", "*", "*"))
	found := false
	for _, f := range files {
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte("The secret word is "+cw.secret)) {
			found = true
		}
	}
	if len(files) != 2 || !found {
		t.Errorf("mbsync stored %d messages, decrypted one found: %v", len(files), found)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
