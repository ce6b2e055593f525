package vaultcfg

import (
	"container/list"
	"sync"
	"time"

	"github.com/smimeproxy/smimeproxy/keystore"
)

// cache holds users' parsed keys, least recently used first out, bounded in keys.
type cache struct {
	mu       sync.Mutex
	ttl      time.Duration
	maxStale time.Duration
	max      int
	n        int // keys held
	lru      *list.List
	users    map[string]*list.Element // -> *cached
}

type cached struct {
	user   string
	keys   []keystore.Key
	loaded time.Time
}

func newCache(ttl, maxStale time.Duration, max int) *cache {
	return &cache{ttl: ttl, maxStale: maxStale, max: max, lru: list.New(), users: map[string]*list.Element{}}
}

// get returns user's cached keys, whether they are fresh (within the TTL), and their age. ok is false when
// nothing usable (not even stale) is cached.
func (c *cache) get(user string, now time.Time) (keys []keystore.Key, fresh bool, age time.Duration, ok bool) {
	if c.ttl < 0 {
		return nil, false, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.users[user]
	if el == nil {
		return nil, false, 0, false
	}
	e := el.Value.(*cached)
	age = now.Sub(e.loaded)
	if age > c.ttl+c.maxStale {
		c.removeLocked(el)
		return nil, false, 0, false
	}
	c.lru.MoveToFront(el)
	return e.keys, age <= c.ttl, age, true
}

// put replaces user's cached keys, evicting the least recently used users beyond the size bound. A single user
// with more keys than the bound is not cached.
func (c *cache) put(user string, keys []keystore.Key, now time.Time) {
	if c.ttl < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.users[user]; el != nil {
		c.removeLocked(el)
	}
	if len(keys) > c.max {
		return
	}
	c.users[user] = c.lru.PushFront(&cached{user: user, keys: keys, loaded: now})
	c.n += len(keys)
	for c.n > c.max {
		c.removeLocked(c.lru.Back())
	}
}

// forget drops user's keys (after Put or Remove).
func (c *cache) forget(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.users[user]; el != nil {
		c.removeLocked(el)
	}
}

func (c *cache) removeLocked(el *list.Element) {
	e := el.Value.(*cached)
	c.lru.Remove(el)
	delete(c.users, e.user)
	c.n -= len(e.keys)
}

// len returns the number of cached keys.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
