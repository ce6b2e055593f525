package testenv

import (
	"os"
	"os/exec"
	"strings"
)

// The tests come in two tiers.
//
//   - The fast tier is plain "go test ./...": no root, no Dovecot, no Vault, no Postfix. The proxy and the
//     decryption run against go-imap's in-memory server (imapmemserver, as in package demo) and
//     keystore.Memory. It must pass on a fresh machine with Go alone, in well under a minute.
//   - The integration tier adds every test that needs a real service (Dovecot, a Vault dev server, Postfix,
//     the docker-compose Dovecot config) or a real client program (openssl, python3, curl, mbsync, neomutt,
//     node, imaptest, swaks, systemd-analyze). It runs when IntegrationEnv is set, as scripts/test.sh and
//     .ci/run always do.
//
// The decision lives here: StartDovecot, StartVault, StartPostfix and VaultBin call RequireIntegration, and
// tests needing a program call LookPath. In the fast tier such a test skips with one message saying how to
// run it; in the integration tier a missing service or program fails the test, never skips it.

// IntegrationEnv is the environment variable that selects the integration tier: "1" (or "true", "yes").
const IntegrationEnv = "SMIMEPROXY_INTEGRATION"

// integrationHint ends every skip message of the fast tier.
const integrationHint = "integration tier: run with " + IntegrationEnv + "=1 (as root, with the services " +
	"scripts/setup.sh installs), or ./scripts/test.sh"

// Integration reports whether the integration tier was selected (IntegrationEnv is 1, true or yes).
func Integration() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv(IntegrationEnv))) {
	case "1", "true", "yes":
		return true
	}
	return false
}

// skipper is the part of *testing.T and *testing.B that skips.
type skipper interface {
	Skipf(format string, args ...any)
}

// RequireIntegration skips the test in the fast tier, naming what it needs (e.g. "Dovecot") and how to run
// it. In the integration tier it does nothing. A TB that cannot skip (a Program: the benchmark command,
// which starts its servers deliberately) always counts as the integration tier. Like t.Skip, it must be
// called on the test's goroutine.
func RequireIntegration(t TB, what string) {
	t.Helper()
	if Integration() {
		return
	}
	if s, ok := t.(skipper); ok {
		s.Skipf("needs %s: %s", what, integrationHint)
	}
}

// LookPath returns the absolute path of the program name (exec.LookPath) for a test that runs it. When the
// program is missing, the test skips in the fast tier and fails in the integration tier (scripts/setup.sh
// installs every program the tests use). A program that is installed runs in either tier.
func LookPath(t TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if Integration() {
		t.Fatalf("testenv: %s is not installed (scripts/setup.sh installs it): %v", name, err)
	}
	if s, ok := t.(skipper); ok {
		s.Skipf("needs the program %s, which is not installed: %s", name, integrationHint)
	}
	t.Fatalf("testenv: %s is not installed: %v", name, err)
	return ""
}
