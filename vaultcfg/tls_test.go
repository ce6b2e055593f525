package vaultcfg_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
)

// TestMarkerKey: the marker key is made once, by whichever of several proxies starting together gets there
// first, and every Store (now or after a restart) reads the same 32 bytes.
func TestMarkerKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	keys := make([][]byte, 4)
	errs := make([]error, 4)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := e.open(e.config(e.v.RootToken()))
			keys[i], errs[i] = s.MarkerKey(ctx)
		}()
	}
	wg.Wait()
	for i := range keys {
		if errs[i] != nil {
			t.Fatalf("store %d: %v", i, errs[i])
		}
		if len(keys[i]) != 32 || !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("store %d got a different key (%d bytes)", i, len(keys[i]))
		}
	}
	again, err := e.open(e.config(e.v.RootToken())).MarkerKey(ctx)
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Fatalf("after a restart: %v, same %v", err, bytes.Equal(again, keys[0]))
	}
	// A user's own keys listing does not see it.
	if _, err := e.open(e.config(e.v.RootToken())).List(ctx, ".proxy"); err == nil {
		t.Error("the marker key's folder is reachable as a user")
	}
}
