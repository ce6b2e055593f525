package decrypt

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCacheEvictsByBytes(t *testing.T) {
	k := func(i int) string {
		return cacheKey(MessageRef{User: "u", Mailbox: "INBOX", UIDValidity: 1, UID: uint32(i)})
	}
	size := int64(1000 + len(k(1)) + entryOverhead)
	c := newCache(3*size, 0)
	for i := 1; i <= 3; i++ {
		c.put(k(i), bytes.Repeat([]byte{'x'}, 1000))
	}
	if n, used := c.stats(); n != 3 || used != 3*size {
		t.Fatalf("stats = %d entries %d bytes, want 3 entries %d bytes", n, used, 3*size)
	}
	if _, ok := c.get(k(1)); !ok { // 1 becomes most recent; 2 is now the eldest
		t.Fatal("get(1) missed")
	}
	c.put(k(4), bytes.Repeat([]byte{'y'}, 1000))
	if _, ok := c.get(k(2)); ok {
		t.Error("least recently used entry 2 was not evicted")
	}
	for _, i := range []int{1, 3, 4} {
		if _, ok := c.get(k(i)); !ok {
			t.Errorf("entry %d evicted, want kept", i)
		}
	}
	if _, used := c.stats(); used > 3*size {
		t.Errorf("used %d bytes > limit %d", used, 3*size)
	}
	// An entry larger than the whole cache is not stored and evicts nothing.
	c.put(k(5), make([]byte, 4*size))
	if n, _ := c.stats(); n != 3 {
		t.Errorf("after oversized put: %d entries, want 3", n)
	}
}

func TestCacheDisabled(t *testing.T) {
	c := newCache(-1, 0)
	c.put("a", []byte("x"))
	if _, ok := c.get("a"); ok {
		t.Fatal("disabled cache stored an entry")
	}
}

func TestCacheDoOnce(t *testing.T) {
	c := newCache(1<<20, 0)
	var calls atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	results := make([][]byte, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := c.do(context.Background(), "k", func(context.Context) ([]byte, bool, error) {
				calls.Add(1)
				<-release
				return []byte("served"), true, nil
			})
			if err != nil {
				t.Error(err)
			}
			results[i] = b
		}()
	}
	// Let the goroutines pile up on the one call; those arriving after it ends hit the cache.
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("fn ran %d times, want 1", n)
	}
	for i, b := range results {
		if string(b) != "served" {
			t.Errorf("result %d = %q", i, b)
		}
	}
}

func TestCacheDoNotCacheable(t *testing.T) {
	c := newCache(1<<20, 0)
	n := 0
	fn := func(context.Context) ([]byte, bool, error) { n++; return []byte("x"), false, nil }
	c.do(context.Background(), "k", fn)
	c.do(context.Background(), "k", fn)
	if n != 2 {
		t.Errorf("uncacheable result reused: fn ran %d times, want 2", n)
	}
	errFail := errors.New("fail")
	if _, err := c.do(context.Background(), "e", func(context.Context) ([]byte, bool, error) { return nil, true, errFail }); !errors.Is(err, errFail) {
		t.Errorf("do error = %v, want %v", err, errFail)
	}
	if _, ok := c.get("e"); ok {
		t.Error("failed call was cached")
	}
}

func TestCacheKeyUnambiguous(t *testing.T) {
	a := cacheKey(MessageRef{User: "a:1", Mailbox: "b", UIDValidity: 1, UID: 2})
	b := cacheKey(MessageRef{User: "a", Mailbox: "1:b", UIDValidity: 1, UID: 2})
	if a == b {
		t.Fatalf("distinct refs share cache key %q", a)
	}
}

// TestCacheDerived: a value derived from cached bytes is computed once while the entry lives, is accounted,
// and is neither returned for other bytes nor kept after eviction.
func TestCacheDerived(t *testing.T) {
	c := newCache(1<<20, 0)
	data := []byte("served message")
	c.put("k", data)
	_, before := c.stats()
	calls := 0
	compute := func() any { calls++; return calls }
	if v := c.derived("k", data, "bs", compute); v != 1 {
		t.Fatalf("first = %v", v)
	}
	if v := c.derived("k", data, "bs", compute); v != 1 || calls != 1 {
		t.Fatalf("second = %v after %d computations, want the cached 1", v, calls)
	}
	if _, after := c.stats(); after != before+derivedOverhead {
		t.Errorf("accounted %d, want %d", after, before+derivedOverhead)
	}
	// Equal bytes in another array are not the cached message (e.g. a newer decryption): computed, not kept.
	if v := c.derived("k", []byte("served message"), "bs", compute); v != 2 {
		t.Errorf("other array = %v, want a fresh computation", v)
	}
	if v := c.derived("missing", data, "bs", compute); v != 3 {
		t.Errorf("missing key = %v", v)
	}
	c.put("k", []byte("replaced"))
	if v := c.derived("k", data, "bs", compute); v != 4 {
		t.Errorf("after replacement = %v", v)
	}
	if n, used := c.stats(); n != 1 || used != int64(len("replaced")+len("k"))+entryOverhead {
		t.Errorf("stats after replacement: %d entries, %d bytes", n, used)
	}
}

// TestCacheMaxIdle: an entry not used for maxIdle is dropped and its bytes no longer accounted; using it
// (get, do) restarts its time. The clock is injected.
func TestCacheMaxIdle(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := newCache(1<<20, time.Hour)
	c.now = func() time.Time { return now }
	c.put("a", []byte("plaintext a"))
	c.put("b", []byte("plaintext b"))
	now = now.Add(50 * time.Minute)
	if _, ok := c.get("a"); !ok { // a used again: its hour starts now
		t.Fatal("a expired early")
	}
	now = now.Add(20 * time.Minute) // b idle 70 minutes, a 20
	if n, _ := c.stats(); n != 1 {
		t.Errorf("%d entries after b's hour, want 1", n)
	}
	if _, ok := c.get("b"); ok {
		t.Error("b still served after an hour unused")
	}
	if b, err := c.do(context.Background(), "a", func(context.Context) ([]byte, bool, error) { return nil, false, errors.New("called") }); err != nil || string(b) != "plaintext a" {
		t.Errorf("do(a) = %q, %v; want the cached entry", b, err)
	}
	now = now.Add(61 * time.Minute)
	if n, used := c.stats(); n != 0 || used != 0 {
		t.Errorf("after an idle hour: %d entries, %d bytes; want none", n, used)
	}
	if c.lru.Len() != 0 || len(c.entries) != 0 {
		t.Error("expired entries still referenced")
	}
	// The timer drops entries without any further use of the cache.
	c2 := newCache(1<<20, time.Hour)
	start := time.Now()
	c2.now = func() time.Time { return start }
	c2.put("x", []byte("x"))
	c2.mu.Lock()
	c2.now = func() time.Time { return start.Add(2 * time.Hour) }
	tm := c2.timer
	c2.mu.Unlock()
	if tm == nil {
		t.Fatal("no expiry timer armed")
	}
	tm.Reset(0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c2.mu.Lock()
		n := len(c2.entries)
		c2.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the timer did not drop the expired entry")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCacheNoTimeLimit: a negative maxIdle keeps entries however long they are unused.
func TestCacheNoTimeLimit(t *testing.T) {
	now := time.Now()
	c := newCache(1<<20, -1)
	c.now = func() time.Time { return now }
	c.put("a", []byte("x"))
	now = now.Add(1000 * time.Hour)
	if _, ok := c.get("a"); !ok {
		t.Error("entry expired without a time limit")
	}
}

// TestCacheDoCancel: the shared call runs under a context of its own. A caller whose context ends returns at
// once while the call goes on for the others (and its result is cached); when the last caller has gone the call
// is cancelled, and a caller arriving then starts a new call instead of receiving that cancellation.
func TestCacheDoCancel(t *testing.T) {
	c := newCache(1<<20, 0)
	started := make(chan context.Context, 4)
	release := make(chan struct{})
	fn := func(ctx context.Context) ([]byte, bool, error) {
		started <- ctx
		select {
		case <-release:
			return []byte("served"), true, nil
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	type result struct {
		b   []byte
		err error
	}
	call := func(ctx context.Context) chan result {
		ch := make(chan result, 1)
		go func() {
			b, err := c.do(ctx, "k", fn)
			ch <- result{b, err}
		}()
		return ch
	}
	waitResult := func(name string, ch chan result) result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: do did not return", name)
			return result{}
		}
	}

	// A leader that goes away: the waiter still gets the result, computed once.
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leader := call(leaderCtx)
	shared := <-started
	waiter := call(context.Background())
	for !waiting(c, "k", 2) {
		time.Sleep(time.Millisecond)
	}
	cancelLeader()
	if r := waitResult("leader", leader); !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled leader: do() = %q, %v; want context.Canceled at once", r.b, r.err)
	}
	if shared.Err() != nil {
		t.Fatal("the shared call was cancelled while a caller still waited for it")
	}
	close(release)
	if r := waitResult("waiter", waiter); r.err != nil || string(r.b) != "served" {
		t.Errorf("waiter: do() = %q, %v; want the shared result", r.b, r.err)
	}
	if b, ok := c.get("k"); !ok || string(b) != "served" {
		t.Error("the shared result was not cached")
	}

	// Every caller goes away: the call is cancelled, and the next caller runs its own.
	c2 := newCache(1<<20, 0)
	c = c2
	release2 := make(chan struct{})
	release = release2
	gone, cancel := context.WithCancel(context.Background())
	first := call(gone)
	doomed := <-started
	cancel()
	if r := waitResult("only caller", first); !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled only caller: do() = %v, want context.Canceled", r.err)
	}
	select {
	case <-doomed.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the shared call was not cancelled when its last caller went away")
	}
	later := call(context.Background())
	if fresh := <-started; fresh.Err() != nil {
		t.Fatal("a later caller joined the cancelled call")
	}
	close(release2)
	if r := waitResult("later", later); r.err != nil || string(r.b) != "served" {
		t.Errorf("later caller: do() = %q, %v; want a fresh result", r.b, r.err)
	}
}

// waiting reports whether n callers wait for key's call.
func waiting(c *cache, key string, n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.callers[key]
	return w != nil && w.n == n
}

// TestCacheDoPanic: a panic in the shared call reaches its callers as a panic on their own goroutines (where
// the proxy recovers it), not on singleflight's, which nothing recovers.
func TestCacheDoPanic(t *testing.T) {
	c := newCache(1<<20, 0)
	defer func() {
		if v := recover(); v != "boom" {
			t.Errorf("recovered %v, want the call's panic", v)
		}
	}()
	c.do(context.Background(), "k", func(context.Context) ([]byte, bool, error) { panic("boom") })
	t.Error("do returned after a panic")
}
