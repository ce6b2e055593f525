package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// TestServeRelaysAndShutsDown runs 'smimeproxy serve' in-process against a real Dovecot over implicit TLS,
// relays a message byte for byte, and on cancellation says BYE to the client and exits 0.
func TestServeRelaysAndShutsDown(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	raw := []byte("Subject: hello\r\nFrom: a@example.org\r\n\r\nbody \xe9\r\n")
	uid := d.Append("alice", "INBOX", raw, nil, time.Time{})

	env, _, stderr := testEnv(map[string]string{"HOME": t.TempDir()})
	p := startServe(t, env, stderr, "--listen", "127.0.0.1:0", "--upstream", "imaps://"+d.TLSAddr(), "--upstream-ca-file", d.CAFile(), "--log-level", "warn", "--no-decrypt")
	addr := p.addr
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
	sec := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %v", err)
	}
	if got := msgs[0].FindBodySection(sec); !bytes.Equal(got, raw) {
		t.Errorf("BODY[] = %q, want %q", got, raw)
	}
	p.stop() // exit 0 expected
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Error("client still connected after shutdown")
	}
}

func TestServeBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no upstream"},
		{[]string{"--upstream", "pop3://x"}, "scheme must be imaps or imap"},
		{[]string{"--upstream", "imaps://x", "--listen", "127.0.0.1:notaport"}, "notaport"},
		{[]string{"--upstream", "imaps://x", "extra"}, `unexpected argument "extra"`},
		// encrypt-appends is on by default; only asked for explicitly does it conflict with --no-decrypt
		{[]string{"--upstream", "imaps://x", "--no-decrypt", "--encrypt-appends"}, "--encrypt-appends needs the key store"},
	}
	for _, tt := range tests {
		env, _, stderr := testEnv(map[string]string{"HOME": t.TempDir()})
		if code := runMain(context.Background(), env, append([]string{"serve"}, tt.args...)); code != exitError {
			t.Errorf("serve %v: exit %d, want %d", tt.args, code, exitError)
		}
		if !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("serve %v: stderr %q, want %q", tt.args, stderr, tt.want)
		}
	}
}

// TestServeMetadataStorePlace: a default metadata store that cannot be created (a read-only home, a container)
// costs only a warning; one asked for with --metadata-store must work or serve does not start.
func TestServeMetadataStorePlace(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	v := testenv.StartVault(t)
	notDir := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CACHE_HOME", notDir) // <file>/smimeproxy/metadata cannot be made
	vars := map[string]string{"HOME": t.TempDir(), "VAULT_ADDR": v.Addr(), "VAULT_TOKEN": v.RootToken(), "VAULT_CACERT": v.CACert()}
	base := []string{"--listen", "127.0.0.1:0", "--upstream", "imaps://" + d.TLSAddr(), "--upstream-ca-file", d.CAFile(), "--log-level", "warn"}

	env, _, stderr := testEnv(vars)
	p := startServe(t, env, stderr, base...)
	p.stop()
	if !strings.Contains(stderr.String(), "no metadata store") {
		t.Errorf("serve with an unusable default store: no warning in %q", stderr.String())
	}

	env, _, stderr = testEnv(vars)
	fs, sf := newServeFlagSet()
	if code := sf.run(context.Background(), env, fs, append(base, "--metadata-store", filepath.Join(notDir, "m"))); code == exitOK {
		t.Errorf("serve with an unusable --metadata-store started (exit %d)", code)
	}
	if !strings.Contains(stderr.String(), "--metadata-store") {
		t.Errorf("serve with an unusable --metadata-store: %q", stderr.String())
	}
}
