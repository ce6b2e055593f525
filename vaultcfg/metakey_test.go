package vaultcfg_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// TestMetastoreKey: each user's metadata-store key is made once and found again; alice's own proxy (a token
// with UserPolicy) creates and reads hers at <prefix>/<user>/.proxy/metastore-key and can reach neither bob's
// nor the all-users proxy's keys; the all-users proxy (ProxyPolicy) keeps one per user in its shared state.
func TestMetastoreKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// The all-users proxy.
	ptok := e.policyToken("smimeproxy-proxy", vaultcfg.ProxyPolicy(vaultcfg.Config{}))
	shared := e.open(e.config(ptok))
	a1, err := shared.MetastoreKey(ctx, "alice@example.com")
	if err != nil || len(a1) != 32 {
		t.Fatalf("MetastoreKey(alice) = %d bytes, %v", len(a1), err)
	}
	b1, err := shared.MetastoreKey(ctx, "bob@example.com")
	if err != nil || bytes.Equal(a1, b1) {
		t.Fatalf("MetastoreKey(bob) = %v, same as alice's: %v", err, bytes.Equal(a1, b1))
	}
	if again, err := e.open(e.config(ptok)).MetastoreKey(ctx, "alice@example.com"); err != nil || !bytes.Equal(again, a1) {
		t.Fatalf("after a restart: %v, same key %v", err, bytes.Equal(again, a1))
	}
	if _, err := shared.MetastoreKey(ctx, "../bob"); err == nil {
		t.Error("MetastoreKey accepted a user name with a path")
	}

	// Alice's own proxy.
	hcl, err := vaultcfg.UserPolicy(vaultcfg.Config{}, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config(e.policyToken("smimeproxy-alice", hcl))
	cfg.User = "alice@example.com"
	own := e.open(cfg)
	k, err := own.MetastoreKey(ctx, "alice@example.com")
	if err != nil || len(k) != 32 {
		t.Fatalf("own MetastoreKey = %d bytes, %v", len(k), err)
	}
	if again, err := e.open(cfg).MetastoreKey(ctx, "alice@example.com"); err != nil || !bytes.Equal(again, k) {
		t.Fatalf("own key after a restart: %v, same %v", err, bytes.Equal(again, k))
	}
	if _, err := own.MetastoreKey(ctx, "bob@example.com"); err == nil {
		t.Error("alice's proxy got a key for bob")
	}
	// Her token cannot read the shared keys either (not even her own shared one).
	if code := e.as(cfg.Token, "GET", "secret/data/smimeproxy/.proxy/metastore-keys/alice@example.com", ""); code != 403 {
		t.Errorf("alice's token reading the shared metadata-store key: HTTP %d, want 403", code)
	}
	bobCfg := e.config(cfg.Token)
	bobCfg.User = "bob@example.com"
	if _, err := e.open(bobCfg).MetastoreKey(ctx, "bob@example.com"); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("alice's token making bob's key: %v, want permission denied", err)
	}
}

// TestRotateMetastoreKey: a rotation writes a new key that every proxy then reads; a user's own proxy rotates
// its own key but not another user's; a user without a key gets one.
func TestRotateMetastoreKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ptok := e.policyToken("smimeproxy-proxy", vaultcfg.ProxyPolicy(vaultcfg.Config{}))
	shared := e.open(e.config(ptok))
	a1, err := shared.MetastoreKey(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := shared.RotateMetastoreKey(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	a2, err := e.open(e.config(ptok)).MetastoreKey(ctx, "alice@example.com")
	if err != nil || len(a2) != 32 || bytes.Equal(a1, a2) {
		t.Fatalf("key after rotation: %d bytes, %v, unchanged: %v", len(a2), err, bytes.Equal(a1, a2))
	}
	if err := shared.RotateMetastoreKey(ctx, "carol@example.com"); err != nil {
		t.Fatalf("rotating a key never made: %v", err)
	}
	if c, err := shared.MetastoreKey(ctx, "carol@example.com"); err != nil || len(c) != 32 {
		t.Fatalf("carol's key after a first rotation: %d bytes, %v", len(c), err)
	}

	hcl, err := vaultcfg.UserPolicy(vaultcfg.Config{}, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config(e.policyToken("smimeproxy-alice", hcl))
	cfg.User = "alice@example.com"
	own := e.open(cfg)
	k1, err := own.MetastoreKey(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := own.RotateMetastoreKey(ctx, "alice@example.com"); err != nil {
		t.Fatalf("alice rotating her own key: %v", err)
	}
	if k2, err := e.open(cfg).MetastoreKey(ctx, "alice@example.com"); err != nil || bytes.Equal(k1, k2) {
		t.Fatalf("own key after rotation: %v, unchanged %v", err, bytes.Equal(k1, k2))
	}
	if err := own.RotateMetastoreKey(ctx, "bob@example.com"); err == nil {
		t.Error("alice's proxy rotated bob's key")
	}
	bobCfg := e.config(cfg.Token)
	bobCfg.User = "bob@example.com"
	if err := e.open(bobCfg).RotateMetastoreKey(ctx, "bob@example.com"); !errors.Is(err, vaultcfg.ErrPermissionDenied) {
		t.Errorf("alice's token rotating bob's key: %v, want permission denied", err)
	}
}
