package testenv

import (
	"time"

	"go.uber.org/goleak"
)

// LeakCheck snapshots the goroutines running now (the test's own helpers, servers started before the code
// under test) and returns a check to call when that code has stopped: it waits up to timeout for every
// goroutine started since to end, and fails with the stacks of those that did not (go.uber.org/goleak).
func LeakCheck(t TB) func(timeout time.Duration) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	return func(timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			err := goleak.Find(before) // retries for about 2 s itself
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("goroutines left running: %v", err)
			}
		}
	}
}
