package vaultcfg_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// TestLookupSharedLoadCancel: concurrent lookups of a user whose keys are not cached share one load from
// Vault (golang.org/x/sync/singleflight). A caller whose context ends returns at once; the load goes on for
// the others (it runs under context.WithoutCancel) and fills the cache. A forwarder in front of the real Vault
// holds the LIST of the user's keys until released (fault injection only).
func TestLookupSharedLoadCancel(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	root := e.open(e.config(e.v.RootToken()))
	key := rsaKey(t, 2)
	e.addKey(key)
	cert := newCert(t, key, "fay@example.com", time.Now())
	if _, err := root.Put(ctx, "fay", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	target, err := url.Parse(e.v.Addr())
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var lists atomic.Int32
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "LIST" || r.URL.Query().Get("list") == "true" {
			lists.Add(1)
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		rp.ServeHTTP(w, r)
	}))
	defer front.Close()
	cfg := e.config(e.v.RootToken())
	cfg.Addr = front.URL
	s := e.open(cfg)

	ids := cms.RecipientIDsOf(cert)
	type result struct {
		keys []keystore.Key
		err  error
	}
	lookup := func(ctx context.Context) chan result {
		ch := make(chan result, 1)
		go func() {
			keys, err := s.Lookup(ctx, "fay", ids)
			ch <- result{keys, err}
		}()
		return ch
	}
	gone, cancel := context.WithCancel(ctx)
	first := lookup(gone)
	deadline := time.Now().Add(10 * time.Second)
	for lists.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the load never reached Vault")
		}
		time.Sleep(5 * time.Millisecond)
	}
	second := lookup(ctx)
	time.Sleep(50 * time.Millisecond) // let the second caller join the load
	cancel()
	select {
	case r := <-first:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("cancelled Lookup() = %v, %v; want an error wrapping context.Canceled", r.keys, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled caller kept waiting for the shared load")
	}
	close(release)
	select {
	case r := <-second:
		if r.err != nil || len(r.keys) != 1 {
			t.Errorf("Lookup() sharing the load = %d keys, %v; want the key", len(r.keys), r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the shared load did not finish")
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("%d LIST requests for two concurrent lookups, want one shared", n)
	}
	if keys, err := s.Lookup(ctx, "fay", ids); err != nil || len(keys) != 1 || lists.Load() != 1 {
		t.Errorf("Lookup() after the shared load = %d keys, %v, %d LISTs; want the cached key", len(keys), err, lists.Load())
	}
}
