package vaultcfg_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// TestConfigRedacted: printing or logging a Config never shows the token or the AppRole secret id.
func TestConfigRedacted(t *testing.T) {
	ar := &vaultcfg.AppRole{RoleID: "role-1", SecretID: "secret-id-value"}
	cfg := vaultcfg.Config{Addr: "https://vault:8200", Token: "hvs.token-value", AppRole: ar}
	var logs bytes.Buffer
	l := slog.New(slog.NewTextHandler(&logs, nil))
	l.Info("config", "cfg", cfg, "approle", ar, "approle_value", *ar)
	out := logs.String() + fmt.Sprintf("%v %+v %#v %s %v %+v %#v", cfg, cfg, cfg, cfg, *ar, *ar, *ar)
	for _, secret := range []string{"hvs.token-value", "secret-id-value"} {
		if strings.Contains(out, secret) {
			t.Errorf("secret %q printed: %s", secret, out)
		}
	}
	if !strings.Contains(out, "https://vault:8200") {
		t.Errorf("address not printed: %s", out)
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{"VAULT_ADDR": "https://v:8200", "VAULT_TOKEN": "t", "VAULT_CACERT": "/ca.pem", "VAULT_NAMESPACE": "ns1", "HOME": "/home/u"}
	cfg := vaultcfg.ConfigFromEnv(func(k string) string { return env[k] })
	if cfg.Addr != "https://v:8200" || cfg.Token != "t" || cfg.CACert != "/ca.pem" || cfg.Namespace != "ns1" || cfg.TokenFile != "/home/u/.vault-token" {
		t.Errorf("ConfigFromEnv() = %#v (addr %s ns %s cacert %s tokenfile %s)", cfg, cfg.Addr, cfg.Namespace, cfg.CACert, cfg.TokenFile)
	}
}
