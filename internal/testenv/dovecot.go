package testenv

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/tlscert"
)

// DovecotBin is where the Dovecot 2.3 server binary is expected (Debian/Ubuntu package dovecot-imapd).
const DovecotBin = "/usr/sbin/dovecot"

// dovecotStartTimeout bounds waiting for Dovecot's greeting (it takes ~0.1 s on an idle machine; the margin is
// for a loaded 2-core CI box).
const dovecotStartTimeout = 30 * time.Second

// DovecotOptions configure StartDovecot. The zero value starts one user, "alice" with password "alice-pw".
type DovecotOptions struct {
	// Users maps user names to passwords; nil means {"alice": "alice-pw"}.
	Users map[string]string
	// Extra is appended verbatim to the generated dovecot.conf.
	Extra string
	// NoTLS turns TLS off: no STARTTLS, no implicit-TLS listener (TLSAddr is then unusable). Benchmarks use it
	// to compare plaintext with plaintext.
	NoTLS bool
}

// Dovecot is a real Dovecot 2.3 IMAP server started for one test on 127.0.0.1 with a throwaway configuration,
// passwd file and maildirs in a temporary directory. It has a plaintext listener (Addr; plaintext LOGIN is
// allowed, as for every loopback client) and an implicit-TLS listener (TLSAddr) whose certificate is signed by
// CAFile. The INBOX namespace has the special-use mailboxes Drafts, Sent, Trash, Junk and Archive. Everything
// runs as the current user, which must be root (Dovecot's login and auth processes drop to dovenull/dovecot).
//
// Dovecot is stopped by t.Cleanup. Its log is printed when the test failed.
type Dovecot struct {
	t       TB
	dir     string
	addr    string
	tlsAddr string
	users   map[string]string
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped atomic.Bool
	uid     int // owner of the maildirs
	gid     int
}

// mailOwner returns the uid and gid Dovecot accesses mail as: the system user "mail".
func mailOwner(t TB) (int, int) {
	u, err := user.Lookup("mail")
	if err != nil {
		t.Fatalf("testenv: no system user \"mail\" to own the test maildirs: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// StartDovecot starts Dovecot and waits (bounded) until it greets. In the fast tier it skips the test
// (RequireIntegration); in the integration tier it fails the test with Dovecot's log when the binary is missing,
// the process is not root or the server does not come up.
func StartDovecot(t TB, opts DovecotOptions) *Dovecot {
	t.Helper()
	RequireIntegration(t, "Dovecot")
	if _, err := os.Stat(DovecotBin); err != nil {
		t.Fatalf("testenv: dovecot not installed at %s (apt-get install dovecot-imapd): %v", DovecotBin, err)
	}
	if os.Getuid() != 0 {
		t.Fatalf("testenv: StartDovecot runs Dovecot as the current user, which must be root")
	}
	users := opts.Users
	if users == nil {
		users = map[string]string{"alice": "alice-pw"}
	}
	dir, err := os.MkdirTemp("", "smimeproxy-dovecot-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Dovecot's auth process (user dovecot) must read the passwd file: the directory must be searchable.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cert, err := tlscert.Generate(tlscert.Options{Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var passwd strings.Builder
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	for _, u := range names {
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s\n", u, users[u])
	}
	for name, data := range map[string][]byte{"cert.pem": cert.CertPEM, "key.pem": cert.KeyPEM, "users": []byte(passwd.String())} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	// Dovecot refuses to access mail as root ("userdb returned 0 as uid"): mail is owned by the "mail" user.
	mailUID, mailGID := mailOwner(t)
	if err := os.MkdirAll(filepath.Join(dir, "mail"), 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.Chown(filepath.Join(dir, "mail"), mailUID, mailGID); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	sslConf, sslListener := fmt.Sprintf("ssl = yes\nssl_cert = <%[1]s/cert.pem\nssl_key = <%[1]s/key.pem", dir), "yes"
	if opts.NoTLS {
		sslConf, sslListener = "ssl = no", "no"
	}
	p1, p2 := dovecotPort(t), dovecotPort(t)
	d := &Dovecot{t: t, uid: mailUID, gid: mailGID, dir: dir, users: users, exited: make(chan struct{}),
		addr: fmt.Sprintf("127.0.0.1:%d", p1), tlsAddr: fmt.Sprintf("127.0.0.1:%d", p2)}
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
listen = 127.0.0.1
protocols = imap
%[7]s
disable_plaintext_auth = no
auth_mechanisms = plain login
# A failed login is answered at once (Dovecot's default waits 2 s): tests of wrong passwords stay fast.
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%n %[1]s/users
}
userdb {
  driver = static
  args = uid=%[5]d gid=%[6]d home=%[1]s/mail/%%n
}
mail_location = maildir:~/Maildir
mail_fsync = never
first_valid_uid = 0
first_valid_gid = 0
imap_max_line_length = 1M
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \Junk
    auto = create
  }
  mailbox Archive {
    special_use = \Archive
    auto = no
  }
}
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
    ssl = %[8]s
  }
}
%[4]s
`, dir, p1, p2, opts.Extra, mailUID, mailGID, sslConf, sslListener)
	cfg := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	d.cmd = exec.Command(DovecotBin, "-F", "-c", cfg)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("testenv: starting dovecot: %v", err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dovecot log:\n%s", d.Log())
		}
		d.Stop()
	})
	switch err := awaitGreeting(d.addr, "* OK", dovecotStartTimeout, d.exited); {
	case errors.Is(err, errExited):
		t.Fatalf("testenv: dovecot exited at start:\n%s", d.Log())
	case err != nil:
		t.Fatalf("testenv: dovecot did not greet on %s: %v\n%s", d.addr, err, d.Log())
	}
	return d
}

func dovecotPort(t TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Addr is the plaintext IMAP listener, 127.0.0.1:port.
func (d *Dovecot) Addr() string { return d.addr }

// TLSAddr is the implicit-TLS (IMAPS) listener, 127.0.0.1:port.
func (d *Dovecot) TLSAddr() string { return d.tlsAddr }

// CAFile is a PEM file with the (self-signed) certificate of both listeners' TLS.
func (d *Dovecot) CAFile() string { return filepath.Join(d.dir, "cert.pem") }

// Password returns user's password; it fails the test for an unknown user.
func (d *Dovecot) Password(user string) string {
	pw, ok := d.users[user]
	if !ok {
		d.t.Fatalf("testenv: no dovecot user %q", user)
	}
	return pw
}

// Users returns the user names.
func (d *Dovecot) Users() []string {
	var l []string
	for u := range d.users {
		l = append(l, u)
	}
	sort.Strings(l)
	return l
}

// MaildirPath is user's Maildir (INBOX; other mailboxes are "."+name below it). The directory exists once
// the user has logged in or Seed has written to it.
func (d *Dovecot) MaildirPath(user string) string {
	return filepath.Join(d.dir, "mail", user, "Maildir")
}

// Log returns Dovecot's log so far.
func (d *Dovecot) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
	return string(b)
}

// Stop stops Dovecot (SIGTERM to its process group, SIGKILL after 10 s). Connections break; tests use it to
// simulate upstream loss. It is idempotent.
func (d *Dovecot) Stop() {
	if !d.stopped.CompareAndSwap(false, true) {
		return
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
	}
	// Dovecot's children (imap, auth) are in the same process group; make sure none survive.
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
}

// Dial logs user in over the plaintext listener and returns the client; it fails the test on error and closes
// the client at cleanup.
func (d *Dovecot) Dial(user string) *imapclient.Client {
	d.t.Helper()
	c, err := imapclient.DialInsecure(d.addr, nil)
	if err != nil {
		d.t.Fatalf("testenv: dial dovecot: %v", err)
	}
	d.t.Cleanup(func() { c.Close() })
	if err := c.Login(user, d.Password(user)).Wait(); err != nil {
		d.t.Fatalf("testenv: dovecot login %s: %v", user, err)
	}
	return c
}

// TLSConfig returns a client TLS configuration trusting CAFile.
func (d *Dovecot) TLSConfig() *tls.Config {
	pem, err := os.ReadFile(d.CAFile())
	if err != nil {
		d.t.Fatalf("testenv: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool}
}

// Append stores msg in user's mailbox (created if missing) through IMAP APPEND with flags and date (zero:
// now) and returns its UID. It fails the test on error.
func (d *Dovecot) Append(user, mailbox string, msg []byte, flags []imap.Flag, date time.Time) imap.UID {
	d.t.Helper()
	c := d.Dial(user)
	defer c.Close()
	if mailbox != "INBOX" {
		_ = c.Create(mailbox, nil).Wait() // ALREADYEXISTS is fine
	}
	data, err := AppendTo(c, mailbox, msg, &imap.AppendOptions{Flags: flags, Time: date})
	if err != nil {
		d.t.Fatalf("testenv: append to %s: %v", mailbox, err)
	}
	return data.UID
}

// AppendTo appends msg to mailbox over c (RFC 9051 section 6.3.12) and returns what the server answered (the
// UID of APPENDUID, RFC 4315, when it says).
func AppendTo(c *imapclient.Client, mailbox string, msg []byte, opts *imap.AppendOptions) (*imap.AppendData, error) {
	cmd := c.Append(mailbox, int64(len(msg)), opts)
	if _, err := cmd.Write(msg); err != nil {
		cmd.Close()
		return nil, err
	}
	if err := cmd.Close(); err != nil {
		return nil, err
	}
	return cmd.Wait()
}

// Raw returns the bytes Dovecot serves for BODY.PEEK[] of the message with uid in user's mailbox.
func (d *Dovecot) Raw(user, mailbox string, uid imap.UID) []byte {
	d.t.Helper()
	c := d.Dial(user)
	defer c.Close()
	if _, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		d.t.Fatalf("testenv: examine %s: %v", mailbox, err)
	}
	sec := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil || len(msgs) != 1 {
		d.t.Fatalf("testenv: fetch %s UID %d: %v (%d messages)", mailbox, uid, err, len(msgs))
	}
	return msgs[0].FindBodySection(sec)
}

// SeedMaildir writes messages straight into user's maildir mailbox (INBOX, or a folder name) as seen
// messages, for fast seeding of large mailboxes before the first login to it. Dovecot assigns UIDs in order
// when it next indexes the mailbox. Messages should use LF line endings (Dovecot serves CRLF).
func (d *Dovecot) SeedMaildir(user, mailbox string, msgs [][]byte) {
	d.t.Helper()
	dir := d.MaildirPath(user)
	if mailbox != "INBOX" {
		dir = filepath.Join(dir, "."+mailbox)
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			d.t.Fatalf("testenv: %v", err)
		}
	}
	// Everything created here (user home, Maildir, folder) belongs to the mail user.
	home := filepath.Join(d.dir, "mail", user)
	filepath.Walk(home, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, d.uid, d.gid) })
	base := time.Now().Unix()
	for i, m := range msgs {
		name := fmt.Sprintf("%d.M%dP%d.seed,S=%d:2,S", base, i, os.Getpid(), len(m))
		p := filepath.Join(dir, "cur", name)
		if err := os.WriteFile(p, m, 0o600); err != nil {
			d.t.Fatalf("testenv: %v", err)
		}
		if err := os.Chown(p, d.uid, d.gid); err != nil {
			d.t.Fatalf("testenv: %v", err)
		}
	}
}

// errExited is awaitGreeting's error when the server process ended first.
var errExited = errors.New("the server exited")

// awaitGreeting dials addr until the server's first line starts with prefix ("* OK" for IMAP, "220" for
// SMTP), the server process ends (exited is closed; nil when not watched), or timeout passes.
func awaitGreeting(addr, prefix string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, prefix) {
				return nil
			}
			err = fmt.Errorf("greeting %q", line)
		}
		select {
		case <-exited:
			return errExited
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no greeting within %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
