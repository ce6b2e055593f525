package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// PostfixBin is the postfix control command (apt: postfix).
const PostfixBin = "/usr/sbin/postfix"

// PostfixOptions configure StartPostfix.
type PostfixOptions struct {
	// LMTPAddr (host:port) receives all mail for Domains by LMTP, e.g. Dovecot.LMTPAddr().
	LMTPAddr string
	// SASLPath is the absolute path of a Dovecot auth-client socket (Dovecot.AuthSocket()): submission on Addr
	// then requires AUTH (PLAIN, LOGIN) checked by Dovecot. Empty: no AUTH, relaying from 127.0.0.1 allowed.
	SASLPath string
	// Domains are delivered to LMTPAddr; default example.com.
	Domains []string
}

// Postfix is a real Postfix (the distribution's binaries) started for one test as a throwaway instance: its own
// config, queue and data directories in a temporary directory (postfix -c DIR), one smtpd on 127.0.0.1:Addr
// (no TLS), delivering every message for its domains by LMTP. It runs as root (Postfix drops to its "postfix"
// user). Stopped by t.Cleanup; its log is printed when the test failed.
type Postfix struct {
	t    TB
	dir  string
	addr string
}

// DovecotLMTPExtra is DovecotOptions.Extra for a Dovecot that also takes mail by LMTP on 127.0.0.1:port and
// offers its auth-client socket at authSocket (mode 0666) for Postfix's SASL.
func DovecotLMTPExtra(port int, authSocket string) string {
	return fmt.Sprintf(`protocols = imap lmtp
lmtp_save_to_detail_mailbox = no
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %d
  }
}
service auth {
  unix_listener %s {
    mode = 0666
  }
}
`, port, authSocket)
}

// FreePort returns a TCP port free on 127.0.0.1 now.
func FreePort(t TB) int {
	p, err := freePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

// StartPostfix starts Postfix and waits (bounded) until it greets. In the fast tier it skips the test
// (RequireIntegration); in the integration tier it fails the test when Postfix is missing or does not come up.
func StartPostfix(t TB, opts PostfixOptions) *Postfix {
	t.Helper()
	RequireIntegration(t, "Postfix")
	if _, err := os.Stat(PostfixBin); err != nil {
		t.Fatalf("testenv: postfix not installed at %s (apt-get install postfix): %v", PostfixBin, err)
	}
	if os.Getuid() != 0 {
		t.Fatalf("testenv: StartPostfix must run as root")
	}
	pu, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("testenv: no system user postfix: %v", err)
	}
	puid, _ := strconv.Atoi(pu.Uid)
	dir, err := os.MkdirTemp("", "smimeproxy-postfix-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	for _, d := range []string{"conf", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "data"), puid, -1); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	port := FreePort(t)
	p := &Postfix{t: t, dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	domains := opts.Domains
	if len(domains) == 0 {
		domains = []string{"example.com"}
	}
	var transport []string
	for _, d := range domains {
		transport = append(transport, d+"=lmtp:inet:"+opts.LMTPAddr)
	}
	relay := "permit_mynetworks, reject_unauth_destination"
	sasl := ""
	if opts.SASLPath != "" {
		relay = "permit_sasl_authenticated, reject"
		sasl = "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = " + opts.SASLPath + "\n"
	}
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = %[2]s
transport_maps = inline:{ %[3]s }
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
smtputf8_enable = yes
smtpd_relay_restrictions = %[4]s
%[5]s`, dir, strings.Join(domains, ", "), strings.Join(transport, ", "), relay, sasl)
	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// The packaged smtpd listens on port 25 in a chroot: here on our port, without chroot.
	re := regexp.MustCompile(`(?m)^smtp\s+inet\s.*$`)
	if !re.Match(master) {
		t.Fatalf("testenv: /etc/postfix/master.cf has no smtp inet service")
	}
	master = re.ReplaceAll(master, []byte(fmt.Sprintf("%d inet n - n - - smtpd", port)))
	for name, data := range map[string][]byte{"main.cf": []byte(mainCF), "master.cf": master} {
		if err := os.WriteFile(filepath.Join(dir, "conf", name), data, 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if out, err := exec.Command(PostfixBin, "-c", filepath.Join(dir, "conf"), "start").CombinedOutput(); err != nil {
		t.Fatalf("testenv: postfix start: %v: %s\n%s", err, out, p.Log())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix log:\n%s", p.Log())
		}
		p.Stop()
	})
	if err := awaitGreeting(p.addr, "220", dovecotStartTimeout, nil); err != nil {
		t.Fatalf("testenv: postfix did not greet on %s: %v\n%s", p.addr, err, p.Log())
	}
	return p
}

// Addr is the smtpd listener, 127.0.0.1:port.
func (p *Postfix) Addr() string { return p.addr }

// Log returns Postfix's log.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

// Flush asks Postfix to deliver its queue now (postqueue -f).
func (p *Postfix) Flush() {
	exec.Command("/usr/sbin/postqueue", "-c", filepath.Join(p.dir, "conf"), "-f").Run()
}

// Stop stops Postfix (postfix stop); stopping twice is harmless.
func (p *Postfix) Stop() {
	exec.Command(PostfixBin, "-c", filepath.Join(p.dir, "conf"), "stop").Run()
}
