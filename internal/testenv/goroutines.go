package testenv

import (
	"runtime"
	"time"
)

// WaitGoroutines waits up to timeout for the number of goroutines to fall back to base (taken before the
// code under test started some), and fails with every goroutine's stack when it does not: a leak.
func WaitGoroutines(t TB, base int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
