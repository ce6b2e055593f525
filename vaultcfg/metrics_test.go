package vaultcfg_test

import (
	"context"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// vaultErrors counts Config.Metrics calls.
type vaultErrors struct{ n atomic.Int32 }

func (v *vaultErrors) VaultError() { v.n.Add(1) }

// TestVaultErrorsCounted: Config.Metrics counts Vault requests that fail, against a real Vault: none while it
// answers (a key that is not there is an answer, not a failure), none for a caller that went away, and each
// failed request once Vault is stopped.
func TestVaultErrorsCounted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	counter := &vaultErrors{}
	cfg := e.config(e.v.RootToken())
	cfg.Timeout = 5 * time.Second
	cfg.Metrics = counter
	s := e.open(cfg)
	key := rsaKey(t, 2)
	e.addKey(key)
	cert := newCert(t, key, "gus@example.com", time.Now())
	if _, err := s.Put(ctx, "gus", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(ctx, "gus"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "gus", "00ff"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Remove(missing) = %v, want ErrNotFound", err)
	}
	if keys, err := s.Lookup(ctx, "nobody", cms.RecipientIDsOf(cert)); err != nil || len(keys) != 0 {
		t.Fatalf("Lookup(user without keys) = %v, %v", keys, err)
	}
	if n := counter.n.Load(); n != 0 {
		t.Fatalf("%d Vault errors counted while Vault answered, want 0", n)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.List(gone, "gus"); err == nil {
		t.Fatal("List() with a cancelled context succeeded")
	}
	if n := counter.n.Load(); n != 0 {
		t.Errorf("%d Vault errors counted for a caller that went away, want 0", n)
	}

	e.v.Stop()
	if _, err := s.List(ctx, "gus"); !errors.Is(err, vaultcfg.ErrUnreachable) {
		t.Fatalf("List() with Vault stopped = %v, want ErrUnreachable", err)
	}
	if n := counter.n.Load(); n != 1 {
		t.Errorf("%d Vault errors counted for one failed request, want 1", n)
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping() with Vault stopped succeeded")
	}
	if n := counter.n.Load(); n != 2 {
		t.Errorf("%d Vault errors counted after a second failed request, want 2", n)
	}
}
