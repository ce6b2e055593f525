package vaultcfg

import (
	"fmt"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/keystore"
)

func keysN(n int) []keystore.Key {
	ks := make([]keystore.Key, n)
	for i := range ks {
		ks[i].ID = fmt.Sprint(i)
	}
	return ks
}

func TestCacheTTLAndStale(t *testing.T) {
	c := newCache(time.Minute, time.Hour, 10)
	t0 := time.Unix(1e9, 0)
	c.put("a", keysN(2), t0)
	if k, fresh, _, ok := c.get("a", t0.Add(30*time.Second)); !ok || !fresh || len(k) != 2 {
		t.Errorf("get within TTL = %d keys, fresh %v, ok %v", len(k), fresh, ok)
	}
	if _, fresh, age, ok := c.get("a", t0.Add(30*time.Minute)); !ok || fresh || age != 30*time.Minute {
		t.Errorf("get after TTL: fresh %v ok %v age %v; want stale but usable", fresh, ok, age)
	}
	if _, _, _, ok := c.get("a", t0.Add(2*time.Hour)); ok {
		t.Error("get beyond TTL+max stale still returns keys")
	}
	if c.len() != 0 {
		t.Errorf("len() = %d after expiry, want 0", c.len())
	}
	c.put("b", keysN(1), t0)
	c.forget("b")
	if _, _, _, ok := c.get("b", t0); ok {
		t.Error("get after forget returns keys")
	}
}

func TestCacheSizeBound(t *testing.T) {
	c := newCache(time.Minute, time.Hour, 5)
	t0 := time.Unix(1e9, 0)
	c.put("a", keysN(2), t0)
	c.put("b", keysN(2), t0)
	c.get("a", t0) // a is now more recently used than b
	c.put("c", keysN(2), t0)
	if c.len() > 5 {
		t.Errorf("len() = %d, want <= 5", c.len())
	}
	if _, _, _, ok := c.get("b", t0); ok {
		t.Error("least recently used user b was not evicted")
	}
	for _, u := range []string{"a", "c"} {
		if _, _, _, ok := c.get(u, t0); !ok {
			t.Errorf("user %s evicted, want kept", u)
		}
	}
	c.put("big", keysN(6), t0)
	if _, _, _, ok := c.get("big", t0); ok {
		t.Error("a user with more keys than the bound was cached")
	}
	c.put("a", keysN(1), t0) // replacing adjusts the count
	if c.len() != 3 {
		t.Errorf("len() = %d after replacing a, want 3", c.len())
	}
	off := newCache(-1, 0, 5)
	off.put("a", keysN(1), t0)
	if _, _, _, ok := off.get("a", t0); ok {
		t.Error("disabled cache returned keys")
	}
}
