package vaultcfg_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// TestTLS connects over HTTPS with the CA from VAULT_CACERT; without it the certificate is rejected clearly.
func TestTLS(t *testing.T) {
	v := testenv.StartVaultTLS(t)
	ctx := context.Background()
	cfg := vaultcfg.ConfigFromEnv(func(k string) string {
		return map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": v.RootToken(), "VAULT_CACERT": v.CACert()}[k]
	})
	s, err := vaultcfg.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open(https, VAULT_CACERT) = %v", err)
	}
	defer s.Close()
	if _, err := s.List(ctx, "bob"); err != nil {
		t.Errorf("List() over https = %v", err)
	}
	cfg.CACert = ""
	_, err = vaultcfg.Open(ctx, cfg)
	if !errors.Is(err, vaultcfg.ErrUnreachable) || !strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Open(https, no CA) = %v, want a one-line certificate error", err)
	}
	cfg.CACert = "/nonexistent/ca.pem"
	if _, err := vaultcfg.Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "/nonexistent/ca.pem") {
		t.Errorf("Open(missing CA file) = %v, want an error naming it", err)
	}
}
