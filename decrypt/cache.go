package decrypt

import (
	"container/list"
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// entryOverhead approximates the memory of one cache entry beyond its bytes (key, list element, map slot).
const entryOverhead = 128

// cacheKey is unambiguous: the user and mailbox are length-prefixed.
func cacheKey(m MessageRef) string {
	return strconv.Itoa(len(m.User)) + ":" + m.User + strconv.Itoa(len(m.Mailbox)) + ":" + m.Mailbox + ":" +
		strconv.FormatUint(uint64(m.UIDValidity), 10) + ":" + strconv.FormatUint(uint64(m.UID), 10)
}

// cache is a least-recently-used map from cacheKey to served bytes, bounded in bytes and in time since last
// use, with call deduplication: concurrent do calls for one key run fn once (golang.org/x/sync/singleflight).
type cache struct {
	limit   int64         // < 0: store nothing
	maxIdle time.Duration // an entry unused for longer is dropped; <= 0: no time limit
	now     func() time.Time

	mu      sync.Mutex
	used    int64
	lru     *list.List // of *cacheEntry, most recently used first
	entries map[string]*list.Element
	flight  singleflight.Group
	callers map[string]*callers // by key: who waits for the call in flight
	timer   *time.Timer         // drops expired entries when nothing else touches the cache
}

type cacheEntry struct {
	key     string
	data    []byte
	derived map[string]any // values computed from data (Decrypter.Derived)
	lastUse time.Time
}

// derivedOverhead is what each derived value is accounted for (a parsed BODYSTRUCTURE or ENVELOPE).
const derivedOverhead = 1 << 10

// derived returns the value named name derived from data, the bytes cached under key, computing it with
// compute at most once while that entry lives. When data is not (or no longer) what the cache holds under key,
// the value is computed and not kept.
func (c *cache) derived(key string, data []byte, name string, compute func() any) any {
	c.mu.Lock()
	e := c.entryLocked(key, data)
	if e != nil {
		if v, ok := e.derived[name]; ok {
			c.mu.Unlock()
			return v
		}
	}
	c.mu.Unlock()
	v := compute()
	if e == nil {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e = c.entryLocked(key, data); e != nil {
		if e.derived == nil {
			e.derived = map[string]any{}
		}
		if _, ok := e.derived[name]; !ok {
			e.derived[name] = v
			c.used += derivedOverhead
		}
	}
	return v
}

// entryLocked returns the entry under key if it holds exactly the slice data (same backing array and length).
func (c *cache) entryLocked(key string, data []byte) *cacheEntry {
	el, ok := c.entries[key]
	if !ok {
		return nil
	}
	e := el.Value.(*cacheEntry)
	if len(e.data) != len(data) || len(data) == 0 || &e.data[0] != &data[0] {
		return nil
	}
	return e
}

// callers are the callers of do waiting for one key's call, and the context that call runs under.
type callers struct {
	n      int // callers waiting; at 0 the call is cancelled and forgotten
	ctx    context.Context
	cancel context.CancelFunc
}

// newCache returns a cache of limit bytes whose entries expire maxIdle after their last use (never when
// maxIdle <= 0).
func newCache(limit int64, maxIdle time.Duration) *cache {
	return &cache{limit: limit, maxIdle: maxIdle, now: time.Now, lru: list.New(), entries: map[string]*list.Element{},
		callers: map[string]*callers{}}
}

func (c *cache) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked()
	el, ok := c.entries[key]
	if !ok {
		return nil, false
	}
	c.touchLocked(el)
	return el.Value.(*cacheEntry).data, true
}

// touchLocked marks el as used now.
func (c *cache) touchLocked(el *list.Element) {
	el.Value.(*cacheEntry).lastUse = c.now()
	c.lru.MoveToFront(el)
}

// expireLocked drops the entries unused for longer than maxIdle. The list is in order of last use, so they
// are at its back. Their bytes are released to the garbage collector (a caller may still hold them).
func (c *cache) expireLocked() {
	if c.maxIdle <= 0 {
		return
	}
	deadline := c.now().Add(-c.maxIdle)
	for el := c.lru.Back(); el != nil && el.Value.(*cacheEntry).lastUse.Before(deadline); el = c.lru.Back() {
		c.removeLocked(el)
	}
}

// scheduleLocked arms the timer for the next expiry, so that entries go when due even if the cache is not
// used again. The timer follows the injected clock only loosely: it re-checks with c.now when it fires.
func (c *cache) scheduleLocked() {
	if c.maxIdle <= 0 || c.timer != nil {
		return
	}
	el := c.lru.Back()
	if el == nil {
		return
	}
	wait := el.Value.(*cacheEntry).lastUse.Add(c.maxIdle).Sub(c.now())
	c.timer = time.AfterFunc(max(wait, time.Second), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.timer = nil
		c.expireLocked()
		c.scheduleLocked()
	})
}

// put stores data under key unless it alone exceeds the limit, evicting least recently used entries.
func (c *cache) put(key string, data []byte) {
	size := int64(len(data)+len(key)) + entryOverhead
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.limit < 0 || size > c.limit {
		return
	}
	c.expireLocked()
	if el, ok := c.entries[key]; ok {
		c.removeLocked(el)
	}
	for c.used+size > c.limit {
		c.removeLocked(c.lru.Back())
	}
	c.entries[key] = c.lru.PushFront(&cacheEntry{key: key, data: data, lastUse: c.now()})
	c.used += size
	c.scheduleLocked()
}

func (c *cache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.entries, e.key)
	c.used -= int64(len(e.data)+len(e.key)) + entryOverhead + int64(len(e.derived))*derivedOverhead
}

// stats returns the number of entries and the bytes accounted.
func (c *cache) stats() (n int, used int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked()
	return len(c.entries), c.used
}

// do returns the bytes cached under key, or runs fn once for all concurrent callers with the same key and
// caches its result when fn says it is cacheable.
//
// fn runs under a context of its own: context.WithoutCancel of the first caller's (its values stay), cancelled
// only when every caller waiting for it has gone. So one client that disconnects does not fail the fetches of
// the others waiting for the same message, and the last one to go cancels the work (a Vault Transit call).
// A caller whose ctx ends returns ctx's error at once; a call cancelled that way is forgotten, so a later caller
// starts afresh instead of receiving its cancellation.
func (c *cache) do(ctx context.Context, key string, fn func(ctx context.Context) (data []byte, cacheable bool, err error)) ([]byte, error) {
	c.mu.Lock()
	c.expireLocked()
	if el, ok := c.entries[key]; ok {
		c.touchLocked(el)
		c.mu.Unlock()
		return el.Value.(*cacheEntry).data, nil
	}
	w := c.callers[key]
	if w == nil {
		w = &callers{}
		w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
		c.callers[key] = w
	}
	w.n++
	c.mu.Unlock()
	defer c.leave(key, w)

	ch := c.flight.DoChan(key, func() (v any, err error) {
		defer func() {
			// DoChan would re-panic on a goroutine of its own, which nothing recovers: hand the panic to
			// the callers instead, which panic on theirs (the proxy recovers there).
			if p := recover(); p != nil {
				v, err = nil, panicError{p}
			}
		}()
		if data, ok := c.get(key); ok { // cached by a call that ended after this caller looked
			return data, nil
		}
		data, cacheable, err := fn(w.ctx)
		if err == nil && cacheable {
			c.put(key, data)
		}
		return data, err
	})
	select {
	case r := <-ch:
		if p, ok := r.Err.(panicError); ok {
			panic(p.v)
		}
		data, _ := r.Val.([]byte)
		return data, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// leave ends one caller's wait for key's call; the last one cancels the call and forgets it.
func (c *cache) leave(key string, w *callers) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.n--; w.n > 0 {
		return
	}
	w.cancel()
	if c.callers[key] == w {
		delete(c.callers, key)
		c.flight.Forget(key)
	}
}

// panicError carries a panic of fn to the callers of do.
type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprintf("decrypt: panic: %v", p.v) }
