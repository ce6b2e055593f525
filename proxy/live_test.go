package proxy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// TestIdleRelaysUpdates: a client idling through the proxy sees EXISTS for a message appended by a second,
// direct connection, and FETCH FLAGS for a flag change (RFC 2177).
func TestIdleRelaysUpdates(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	seed(t, d, "alice")
	addr, _ := startProxy(t, d, nil)
	exists := make(chan uint32, 16)
	flags := make(chan []imap.Flag, 16)
	c := dial(t, addr, "alice", "alice-pw", &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(m *imapclient.UnilateralDataMailbox) {
			if m.NumMessages != nil {
				exists <- *m.NumMessages
			}
		},
		Fetch: func(m *imapclient.FetchMessageData) {
			if b, err := m.Collect(); err == nil && b.Flags != nil {
				flags <- b.Flags
			}
		},
	}})
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	other := dial(t, d.Addr(), "alice", "alice-pw", nil)
	if _, err := other.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	d.Append("alice", "INBOX", msg([]string{"Subject: new"}, "hi\n"), nil, time.Time{})
	select {
	case n := <-exists:
		if n != 9 {
			t.Errorf("EXISTS %d, want 9", n)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no EXISTS relayed during IDLE")
	}
	if err := other.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-flags:
		if !strings.Contains(strings.Join(flagStrings(f), " "), `\Flagged`) {
			t.Errorf("FETCH FLAGS %v, want \\Flagged", f)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no FETCH FLAGS relayed during IDLE")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("NOOP after IDLE: %v", err)
	}
	// Without IDLE, NOOP polls the upstream (RFC 9051 section 6.1.2).
	d.Append("alice", "INBOX", msg([]string{"Subject: polled"}, "hi\n"), nil, time.Time{})
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-exists:
		if n != 10 {
			t.Errorf("EXISTS after NOOP %d, want 10", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("NOOP did not relay EXISTS")
	}
}

func flagStrings(f []imap.Flag) []string {
	var s []string
	for _, x := range f {
		s = append(s, string(x))
	}
	return s
}

// TestUpstreamLoss: when Dovecot dies mid-session the client gets BYE and the connection closes; the proxy's
// goroutines return to their number before the client came.
func TestUpstreamLoss(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	seed(t, d, "alice")
	addr, _ := startProxy(t, d, nil)
	leaks := testenv.LeakCheck(t)

	bye := make(chan string, 1)
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	_ = bye
	d.Stop()
	select {
	case <-c.Closed():
	case <-time.After(15 * time.Second):
		t.Fatal("client connection still open 15 s after the upstream died")
	}
	c.Close()
	leaks(10 * time.Second)
}

// TestUpstreamLossBye checks the BYE text on the wire with a raw client: the server's own BYE when it says
// one (Dovecot shutting down), the proxy's when the connection is cut without one (RFC 9051 section 7.1.5).
func TestUpstreamLossBye(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	addr, _ := startProxy(t, d, nil)
	conn := rawDial(t, addr)
	conn.cmd(t, "a LOGIN alice alice-pw", "a OK")
	conn.cmd(t, "b SELECT INBOX", "b OK")
	d.Stop()
	line := conn.readUntil(t, "* BYE")
	if !strings.Contains(line, "* BYE Server shutting down") && !strings.Contains(line, "* BYE Upstream server connection lost") {
		t.Errorf("BYE line %q, want Dovecot's own or the proxy's", line)
	}

	d2 := testenv.StartDovecot(t, testenv.DovecotOptions{})
	cut := testenv.NewRelay(t, d2.Addr())
	addr2, _ := startProxyAt(t, "imap://"+cut.Addr(), d2.CAFile(), nil)
	conn2 := rawDial(t, addr2)
	conn2.cmd(t, "a LOGIN alice alice-pw", "a OK")
	conn2.cmd(t, "b SELECT INBOX", "b OK")
	cut.Stop()
	line = conn2.readUntil(t, "* BYE")
	if !strings.Contains(line, "* BYE Upstream server connection lost") {
		t.Errorf("BYE line %q after a cut", line)
	}
}

// TestPythonImaplib drives the proxy with Python's imaplib (an independent client): RFC822 and
// BODY.PEEK[] bytes equal Dovecot's, RFC822.SIZE equals their length, SEARCH and STORE work.
func TestPythonImaplib(t *testing.T) {
	py := testenv.LookPath(t, "python3")
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	seed(t, d, "alice")
	addr, _ := startProxy(t, d, nil)
	script, err := filepath.Abs(filepath.Join("..", "tests", "clients", "imaplib_fetch.py"))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(py, script, host, port, "alice", "alice-pw", out)
	b, err := cmd.CombinedOutput()
	t.Logf("imaplib:\n%s", b)
	if err != nil {
		t.Fatalf("imaplib script: %v", err)
	}
	for uid := imap.UID(1); uid <= 8; uid++ {
		got, err := os.ReadFile(filepath.Join(out, uidName(uid)))
		if err != nil {
			t.Fatal(err)
		}
		if want := d.Raw("alice", "INBOX", uid); !bytes.Equal(got, want) {
			t.Errorf("UID %d: imaplib got %d bytes through the proxy, Dovecot has %d", uid, len(got), len(want))
		}
	}
}

func uidName(uid imap.UID) string { return "uid-" + string(rune('0'+uid)) + ".eml" }
