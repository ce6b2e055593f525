//go:build linux

package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// disableCoreDumps keeps this process's memory (private keys, Vault tokens, decrypted mail) out of core dumps
// and away from same-user debuggers, whether or not a service manager did so (the systemd unit sets
// LimitCORE=0 too): RLIMIT_CORE is set to 0 (soft and hard, so it cannot be raised again without privilege;
// setrlimit(2)), and the process is made non-dumpable with prctl(PR_SET_DUMPABLE, 0) (prctl(2)), which also
// stops ptrace attach and /proc/PID/mem reads by other processes of the same user. Both are kept across
// fork and reset by execve of another program, so child processes are unaffected.
func disableCoreDumps() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("setrlimit RLIMIT_CORE 0: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_DUMPABLE 0: %w", err)
	}
	return nil
}
