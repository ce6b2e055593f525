package testenv_test

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// ExampleStartDovecot is how tests get a real IMAP server:
//
//	d := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"alice": "pw"}})
//	uid := d.Append("alice", "INBOX", msg, []imap.Flag{imap.FlagSeen}, time.Time{})
//	c := d.Dial("alice") // logged-in imapclient on d.Addr(); or imaps on d.TLSAddr() with d.TLSConfig()
//	raw := d.Raw("alice", "INBOX", uid)
func TestStartDovecot(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"alice": "a-pw", "bob": "b-pw"}})
	msg := []byte("Subject: t\r\nFrom: x@example.org\r\n\r\n\xe9 8bit\r\n")
	uid := d.Append("bob", "Folder", msg, []imap.Flag{imap.FlagSeen}, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if got := d.Raw("bob", "Folder", uid); !bytes.Equal(got, msg) {
		t.Errorf("Raw = %q, want %q", got, msg)
	}
	d.SeedMaildir("alice", "INBOX", [][]byte{[]byte("Subject: seeded\n\nbody\n"), []byte("Subject: two\n\nx\n")})
	c := d.Dial("alice")
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 2 {
		t.Fatalf("seeded INBOX: %+v, %v", sel, err)
	}
	if got := d.Raw("alice", "INBOX", 1); !bytes.Equal(got, []byte("Subject: seeded\r\n\r\nbody\r\n")) {
		t.Errorf("seeded message served as %q", got)
	}
	if _, err := os.Stat(d.CAFile()); err != nil {
		t.Error(err)
	}
	d.Stop()
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Error("connection survived Stop")
	}
}
