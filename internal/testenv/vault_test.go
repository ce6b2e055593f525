package testenv

import (
	"net/http"
	"strings"
	"testing"
)

func TestStartVault(t *testing.T) {
	v := StartVault(t)
	if !strings.HasPrefix(v.Addr(), "http://127.0.0.1:") {
		t.Fatalf("Addr() = %q, want loopback", v.Addr())
	}
	body := v.MustRequest("GET", "sys/mounts", "")
	if !strings.Contains(string(body), `"transit/"`) || !strings.Contains(string(body), `"secret/"`) {
		t.Fatalf("mounts lack transit/ or secret/: %s", body)
	}
	get := func() error {
		resp, err := http.Get(v.Addr() + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(); err != nil {
		t.Fatalf("health via relay: %v", err)
	}
	v.Stop()
	if err := get(); err == nil {
		t.Fatal("health via relay succeeded after Stop")
	}
	v.Restart()
	if err := get(); err != nil {
		t.Fatalf("health via relay after Restart: %v", err)
	}
	if _, err := v.Request("GET", "sys/mounts/transit", ""); err != nil {
		t.Fatalf("vault lost its mounts across Stop/Restart: %v", err)
	}
}

func TestStartVaultTLS(t *testing.T) {
	v := StartVaultTLS(t)
	if !strings.HasPrefix(v.Addr(), "https://127.0.0.1:") || v.CACert() == "" {
		t.Fatalf("Addr() = %q, CACert() = %q", v.Addr(), v.CACert())
	}
	v.MustRequest("GET", "sys/mounts/transit", "")
	// Without the CA the server is not trusted.
	if _, err := http.Get(v.Addr() + "/v1/sys/health"); err == nil {
		t.Error("plain client trusted the dev TLS certificate")
	}
}
