package vaultcfg

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestPlaintextVaultRefused: a token and private keys never cross the network in clear by accident: an http://
// Vault address is accepted only on loopback, or when allowed explicitly.
func TestPlaintextVaultRefused(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		allow bool
		ok    bool
	}{
		{"https://vault.example.com:8200", false, true},
		{"http://127.0.0.1:8200", false, true},
		{"http://[::1]:8200", false, true},
		{"http://localhost:8200", false, true},
		{"http://vault.example.com:8200", false, false},
		{"http://10.0.0.5:8200", false, false},
		{"http://vault:8200", true, true},
		{"ftp://vault:8200", true, false},
		{"vault:8200", false, false},
	} {
		err := checkTransport(tc.addr, tc.allow)
		if (err == nil) != tc.ok {
			t.Errorf("checkTransport(%q, allow=%v) = %v", tc.addr, tc.allow, err)
		}
		if !tc.ok && strings.HasPrefix(tc.addr, "http://") && !errors.Is(err, ErrPlaintextVault) {
			t.Errorf("%q: error %v is not ErrPlaintextVault", tc.addr, err)
		}
	}
	// Open refuses before sending anything.
	if _, err := Open(context.Background(), Config{Addr: "http://vault.example.com:8200", Token: "t"}); !errors.Is(err, ErrPlaintextVault) {
		t.Errorf("Open with a remote http address: %v", err)
	}
}
