package decrypt

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// TestKeyUnavailableNotCachedVault: with the key in a real Vault's Transit engine and its lookup still cached
// by the store, stopping Vault makes the key operation itself fail (cms.ErrKeyOperation, reason
// key-unavailable, while the Lookup succeeded). That copy must not be cached: once Vault is back, the next
// Rewrite of the same message decrypts (issue 10, item 11b).
func TestKeyUnavailableNotCachedVault(t *testing.T) {
	v := testenv.StartVault(t)
	ctx := context.Background()
	store, err := vaultcfg.Open(ctx, vaultcfg.Config{Addr: v.Addr(), Token: v.RootToken(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	cert, key := testIdentity(t, "alice@example.com")
	if _, err := store.Put(ctx, "alice", []*x509.Certificate{cert}, key, keystore.PutOptions{Transit: true}); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	rewrite := func(uid uint32) []byte {
		t.Helper()
		msg := encryptedMessage(t, "transit", innerText, cert)
		served, err := d.Rewrite(ctx, MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: uid},
			func() ([]byte, error) { return msg, nil })
		if err != nil {
			t.Fatal(err)
		}
		return served
	}
	if st := statusOf(rewrite(1)); st != "decrypted" { // also fills the store's key cache
		t.Fatalf("Vault up: status %q", st)
	}
	v.Stop()
	down := rewrite(2)
	if st := strings.Join(mimepart.Values(down, StatusField), ""); !strings.Contains(st, "undecryptable; reason="+ReasonKeyUnavailable) {
		t.Fatalf("Vault down: status %q, want undecryptable key-unavailable", st)
	}
	if d.Cached(MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: 2}) {
		t.Error("the key-unavailable copy is cached")
	}
	v.Restart()
	if st := statusOf(rewrite(2)); st != "decrypted" {
		t.Errorf("Vault back: status %q, want decrypted", st)
	}
}
