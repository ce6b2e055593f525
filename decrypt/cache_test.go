package decrypt

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestCacheEvictsByBytes(t *testing.T) {
	k := func(i int) string {
		return cacheKey(MessageRef{User: "u", Mailbox: "INBOX", UIDValidity: 1, UID: uint32(i)})
	}
	size := int64(1000 + len(k(1)) + entryOverhead)
	c := newCache(3 * size)
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
	c := newCache(-1)
	c.put("a", []byte("x"))
	if _, ok := c.get("a"); ok {
		t.Fatal("disabled cache stored an entry")
	}
}

func TestCacheDoOnce(t *testing.T) {
	c := newCache(1 << 20)
	var calls atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	results := make([][]byte, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err, _ := c.do("k", func() ([]byte, bool, error) {
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
	c := newCache(1 << 20)
	n := 0
	fn := func() ([]byte, bool, error) { n++; return []byte("x"), false, nil }
	c.do("k", fn)
	c.do("k", fn)
	if n != 2 {
		t.Errorf("uncacheable result reused: fn ran %d times, want 2", n)
	}
	errFail := errors.New("fail")
	if _, err, _ := c.do("e", func() ([]byte, bool, error) { return nil, true, errFail }); !errors.Is(err, errFail) {
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
	c := newCache(1 << 20)
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
