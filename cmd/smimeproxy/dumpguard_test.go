//go:build linux

package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const dumpGuardChild = "SMIMEPROXY_TEST_DUMPGUARD_CHILD"

// TestDisableCoreDumps runs disableCoreDumps in a child process (the test binary again: a non-dumpable test
// binary could not be debugged) and checks there that prctl(PR_GET_DUMPABLE) says not dumpable and that
// RLIMIT_CORE is 0, by getrlimit and in /proc/self/limits.
func TestDisableCoreDumps(t *testing.T) {
	if os.Getenv(dumpGuardChild) == "1" {
		if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 1 {
			t.Fatalf("before: PR_GET_DUMPABLE = %d, %v; want 1 (the check would prove nothing)", d, err)
		}
		if err := disableCoreDumps(); err != nil {
			t.Fatal(err)
		}
		if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 0 {
			t.Errorf("PR_GET_DUMPABLE = %d, %v; want 0", d, err)
		}
		limits, err := os.ReadFile("/proc/self/limits")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(limits), "\n") {
			if strings.HasPrefix(l, "Max core file size") && strings.Join(strings.Fields(l)[4:6], " ") != "0 0" {
				t.Errorf("/proc/self/limits: %q, want 0 0", l)
			}
		}
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_CORE, &lim); err != nil || lim.Cur != 0 || lim.Max != 0 {
			t.Errorf("RLIMIT_CORE = %+v, %v; want 0/0", lim, err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDisableCoreDumps$", "-test.v")
	cmd.Env = append(os.Environ(), dumpGuardChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestDisableCoreDumps") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
