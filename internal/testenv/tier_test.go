package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a TB that records Skipf and Fatalf and stops the function under test at the first, as
// testing.T does.
type recorder struct {
	*testing.T
	skipped, fatal string
}

type stop struct{}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	panic(stop{})
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	panic(stop{})
}

// call runs f with a fresh recorder and returns it once f returned, skipped or failed.
func call(t *testing.T, f func(TB)) *recorder {
	r := &recorder{T: t}
	func() {
		defer func() {
			if v := recover(); v != nil {
				if _, ok := v.(stop); !ok {
					panic(v)
				}
			}
		}()
		f(r)
	}()
	return r
}

func TestIntegration(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "false": false, "no": false, "1": true, "true": true, "TRUE": true, " yes ": true} {
		t.Setenv(IntegrationEnv, v)
		if got := Integration(); got != want {
			t.Errorf("%s=%q: Integration() = %v, want %v", IntegrationEnv, v, got, want)
		}
	}
}

// TestRequireIntegration: the fast tier skips, naming what is needed and how to run it; the integration tier
// goes on; a Program never skips.
func TestRequireIntegration(t *testing.T) {
	t.Setenv(IntegrationEnv, "")
	r := call(t, func(tb TB) { RequireIntegration(tb, "Dovecot") })
	if !strings.Contains(r.skipped, "needs Dovecot") || !strings.Contains(r.skipped, IntegrationEnv+"=1") || r.fatal != "" {
		t.Errorf("fast tier: skipped %q, fatal %q", r.skipped, r.fatal)
	}
	p := NewProgram(&strings.Builder{})
	if err := p.Run(func() { RequireIntegration(p, "Dovecot") }); err != nil {
		t.Errorf("Program in the fast tier: %v", err)
	}

	t.Setenv(IntegrationEnv, "1")
	if r := call(t, func(tb TB) { RequireIntegration(tb, "Dovecot") }); r.skipped != "" || r.fatal != "" {
		t.Errorf("integration tier: skipped %q, fatal %q", r.skipped, r.fatal)
	}
}

// TestLookPath: an installed program is found in both tiers; a missing one skips the fast tier and fails the
// integration tier.
func TestLookPath(t *testing.T) {
	const present, missing = "smimeproxy-test-program", "smimeproxy-no-such-program"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, present), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	for _, tier := range []string{"", "1"} {
		t.Setenv(IntegrationEnv, tier)
		var got string
		if r := call(t, func(tb TB) { got = LookPath(tb, present) }); got != filepath.Join(dir, present) || r.skipped != "" || r.fatal != "" {
			t.Errorf("%s=%q: LookPath(%s) = %q, skipped %q, fatal %q", IntegrationEnv, tier, present, got, r.skipped, r.fatal)
		}
	}
	t.Setenv(IntegrationEnv, "")
	if r := call(t, func(tb TB) { LookPath(tb, missing) }); !strings.Contains(r.skipped, missing) || r.fatal != "" {
		t.Errorf("fast tier, missing program: skipped %q, fatal %q", r.skipped, r.fatal)
	}
	t.Setenv(IntegrationEnv, "1")
	if r := call(t, func(tb TB) { LookPath(tb, missing) }); !strings.Contains(r.fatal, missing) || r.skipped != "" {
		t.Errorf("integration tier, missing program: skipped %q, fatal %q", r.skipped, r.fatal)
	}
}

// TestStartersSkipInFastTier: the service starters skip before touching anything in the fast tier.
func TestStartersSkipInFastTier(t *testing.T) {
	t.Setenv(IntegrationEnv, "")
	for name, start := range map[string]func(TB){
		"Dovecot":  func(tb TB) { StartDovecot(tb, DovecotOptions{}) },
		"Postfix":  func(tb TB) { StartPostfix(tb, PostfixOptions{}) },
		"Vault":    func(tb TB) { StartVault(tb) },
		"VaultBin": func(tb TB) { VaultBin(tb) },
	} {
		if r := call(t, start); !strings.Contains(r.skipped, "needs ") || r.fatal != "" {
			t.Errorf("%s in the fast tier: skipped %q, fatal %q", name, r.skipped, r.fatal)
		}
	}
}
