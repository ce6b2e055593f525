package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestCommandTable: the table of subcommands (no init registration) names each once, in order, every entry
// runs something, and usage lists them all.
func TestCommandTable(t *testing.T) {
	table := commandTable()
	var usageOut bytes.Buffer
	usage(&usageOut)
	seen := map[string]bool{}
	for i, c := range table {
		if c.name == "" || c.run == nil || c.summary == "" {
			t.Errorf("command %d (%q) lacks a name, run or summary", i, c.name)
		}
		if seen[c.name] {
			t.Errorf("command %q listed twice", c.name)
		}
		seen[c.name] = true
		if i > 0 && table[i-1].name >= c.name {
			t.Errorf("command %q after %q: keep the table sorted", c.name, table[i-1].name)
		}
		if !strings.Contains(usageOut.String(), "  "+c.name+" ") {
			t.Errorf("usage does not list %q", c.name)
		}
	}
	for _, want := range []string{"serve", "demo", "decrypt", "keys", "doctor", "config"} {
		if !seen[want] {
			t.Errorf("no %q command", want)
		}
	}
}
