package observe_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/observe"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := observe.NewLogger(&buf, observe.LogOptions{Format: "json", Level: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("login", "user", "bob", "pass", observe.Secret("hunter2"), "vault_token", "hvs.abc", "Password", "pw1")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %v: %q", err, buf.String())
	}
	if rec["msg"] != "login" || rec["user"] != "bob" || rec["level"] != "WARN" {
		t.Errorf("record = %v", rec)
	}
	for _, k := range []string{"pass", "vault_token", "Password"} {
		if rec[k] != "***" {
			t.Errorf("%s = %v, want ***", k, rec[k])
		}
	}
	for _, leak := range []string{"hunter2", "hvs.abc", "pw1", "hidden"} {
		if strings.Contains(buf.String(), leak) {
			t.Errorf("output contains %q: %s", leak, buf.String())
		}
	}

	buf.Reset()
	l, err = observe.NewLogger(&buf, observe.LogOptions{Level: "DEBUG"})
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("fetch", "uid", 7, "secret", "s3")
	if got := buf.String(); !strings.Contains(got, "level=DEBUG msg=fetch uid=7 secret=***") {
		t.Errorf("text output = %q", got)
	}

	for _, o := range []observe.LogOptions{{Format: "xml"}, {Level: "loud"}} {
		if _, err := observe.NewLogger(io.Discard, o); err == nil || !strings.HasPrefix(err.Error(), "observe: unknown log") {
			t.Errorf("NewLogger(%+v) error = %v", o, err)
		}
	}
}

func TestSecret(t *testing.T) {
	s := observe.Secret("hunter2")
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%s %v %+v %#v %x %q %d", s, s, s, s, s, s, s),
		fmt.Sprintf("%v", struct{ P observe.Secret }{s}),
		fmt.Sprint(errors.New("login failed: " + s.String())),
	} {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "68756e") || !strings.Contains(out, "***") {
			t.Errorf("formatted secret = %q", out)
		}
	}
	j, err := json.Marshal(map[string]observe.Secret{"token": s})
	if err != nil || string(j) != `{"token":"***"}` {
		t.Errorf("json = %s, %v", j, err)
	}
	if s.Reveal() != "hunter2" {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
}

func TestSecretKey(t *testing.T) {
	for k, want := range map[string]bool{
		"password": true, "vault_token": true, "Secret": true, "approle.secret_id": true, "tokens": false,
		"user": false, "mailbox": false, "key_id": false, "Authorization": true,
	} {
		if got := observe.SecretKey(k); got != want {
			t.Errorf("SecretKey(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestNilSafe(t *testing.T) {
	var m *observe.Metrics
	m.SessionStarted()
	m.SessionEnded()
	m.Login(true)
	m.Login(false)
	m.UpstreamError()
	m.Decrypted()
	m.Undecryptable("corrupt")
	m.CacheHit()
	m.CacheMiss()
	m.CacheBytesFrom(func() int64 { return 5 })
	m.VaultError()
	if m.Registry() != nil {
		t.Error("nil Metrics has a registry")
	}
	var h *observe.Health
	h.SetReady(true, "")
	h.AddCheck("x", func(context.Context) error { return nil })
	if ok, _ := h.Check(context.Background()); ok {
		t.Error("nil Health is ready")
	}
}

// curl fetches url with the real curl client and returns the status code and body.
func curl(t *testing.T, url string) (int, string) {
	t.Helper()
	out, err := exec.Command(testenv.LookPath(t, "curl"), "-sS", "--max-time", "10", "-w", "\n%{http_code}", url).Output()
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	var code int
	fmt.Sscan(s[i+1:], &code)
	return code, s[:i]
}

func TestHTTPMetricsAndHealth(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := observe.NewMetrics()
	h := &observe.Health{Timeout: 200 * time.Millisecond}
	srv, err := observe.StartHTTP(ctx, observe.HTTPOptions{Addr: "127.0.0.1:0", Metrics: m, Health: h})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	base := "http://" + srv.Addr().String()

	m.SessionStarted()
	m.SessionStarted()
	m.SessionEnded()
	m.Login(true)
	m.Login(false)
	m.Login(false)
	m.Decrypted()
	m.Undecryptable("no-matching-key")
	m.Undecryptable("no-matching-key")
	m.Undecryptable("key-unavailable")
	m.CacheHit()
	m.CacheMiss()
	var cacheBytes atomic.Int64
	cacheBytes.Store(4096)
	m.CacheBytesFrom(cacheBytes.Load)
	m.VaultError()
	m.UpstreamError()
	code, body := curl(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics status %d", code)
	}
	for _, want := range []string{
		"smimeproxy_sessions_active 1\n", "smimeproxy_sessions_total 2\n", "smimeproxy_logins_ok_total 1\n",
		"smimeproxy_logins_failed_total 2\n", "smimeproxy_messages_decrypted_total 1\n",
		"smimeproxy_messages_undecryptable_total{reason=\"no-matching-key\"} 2\n",
		"smimeproxy_messages_undecryptable_total{reason=\"key-unavailable\"} 1\n", "smimeproxy_decrypt_cache_hits_total 1\n",
		"smimeproxy_decrypt_cache_misses_total 1\n", "smimeproxy_decrypt_cache_bytes 4096\n",
		"smimeproxy_vault_errors_total 1\n", "smimeproxy_upstream_errors_total 1\n",
		"# HELP smimeproxy_sessions_active ", "go_goroutines ", "process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// Gauges are read at scrape time: a new value shows at the next scrape, with nothing polling in between.
	cacheBytes.Store(1 << 20)
	if _, body := curl(t, base+"/metrics"); !strings.Contains(body, "smimeproxy_decrypt_cache_bytes 1.048576e+06\n") {
		t.Errorf("/metrics after the cache grew lacks smimeproxy_decrypt_cache_bytes 1.048576e+06")
	}

	// Readiness: 503 until SetReady, then 200; a failing, slow or panicking check makes it 503 again.
	code, body = curl(t, base+"/healthz")
	if code != 503 || !strings.HasPrefix(body, "not ready\nserver: not ready: starting\n") {
		t.Errorf("/healthz before ready = %d %q", code, body)
	}
	h.SetReady(true, "")
	h.AddCheck("upstream", func(context.Context) error { return nil })
	code, body = curl(t, base+"/healthz")
	if code != 200 || body != "ready\nserver: ok\nupstream: ok\n" {
		t.Errorf("/healthz ready = %d %q", code, body)
	}
	h.AddCheck("vault", func(context.Context) error { return errors.New("vault: connection refused") })
	h.AddCheck("slow", func(ctx context.Context) error { <-ctx.Done(); time.Sleep(time.Second); return nil })
	h.AddCheck("boom", func(context.Context) error { panic("bug") })
	start := time.Now()
	code, body = curl(t, base+"/healthz")
	if code != 503 || !strings.Contains(body, "vault: vault: connection refused\n") ||
		!strings.Contains(body, "slow: timed out: context deadline exceeded\n") ||
		!strings.Contains(body, "boom: check panicked: bug\n") || !strings.Contains(body, "upstream: ok\n") {
		t.Errorf("/healthz failing = %d %q", code, body)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("/healthz waited %v for a check that ignores its deadline", d)
	}
	h.SetReady(false, "shutting down")
	if _, body = curl(t, base+"/healthz"); !strings.Contains(body, "server: not ready: shutting down\n") {
		t.Errorf("/healthz shutting down = %q", body)
	}

	// net/http client: HEAD works, POST is refused, unknown paths are 404.
	resp, err := http.Head(base + "/healthz")
	if err != nil || resp.StatusCode != 503 {
		t.Errorf("HEAD /healthz = %v, %v", resp, err)
	}
	resp, err = http.Post(base+"/healthz", "text/plain", nil)
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if code, _ := curl(t, base+"/nope"); code != 404 {
		t.Errorf("/nope = %d, want 404", code)
	}

	// Cancelling the context stops the listener.
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := &http.Client{Timeout: time.Second}
		_, err := c.Get(base + "/metrics")
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("listener still serving after its context ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartHTTPRefusesRemote(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:9143", "example.org:9143"} {
		_, err := observe.StartHTTP(context.Background(), observe.HTTPOptions{Addr: addr})
		if !errors.Is(err, observe.ErrNotLoopback) {
			t.Errorf("StartHTTP(%q) error = %v, want ErrNotLoopback", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:9143", "[::1]:9143", "localhost:9143", "127.1.2.3:1", "[::ffff:127.0.0.1]:1"} {
		if err := observe.CheckLoopback(addr); err != nil {
			t.Errorf("CheckLoopback(%q) = %v", addr, err)
		}
	}
	if err := observe.CheckLoopback("127.0.0.1"); err == nil || errors.Is(err, observe.ErrNotLoopback) {
		t.Errorf("CheckLoopback(no port) = %v, want a syntax error", err)
	}
	// The same address is accepted when remote access is allowed (bound here only on loopback).
	srv, err := observe.StartHTTP(context.Background(), observe.HTTPOptions{Addr: "127.0.0.1:0", AllowRemote: true})
	if err != nil {
		t.Fatal(err)
	}
	// Without metrics or health state: /metrics is 404, /healthz 503.
	base := "http://" + srv.Addr().String()
	if code, _ := curl(t, base+"/metrics"); code != 404 {
		t.Errorf("/metrics without Metrics = %d, want 404", code)
	}
	if code, body := curl(t, base+"/healthz"); code != 503 || !strings.Contains(body, "server: no health state") {
		t.Errorf("/healthz without Health = %d %q, want 503", code, body)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
}

// TestHTTPRefusesForeignHost: a page the user visits cannot read /metrics or /healthz through a DNS name
// rebound to 127.0.0.1 (DNS rebinding): only loopback addresses and localhost are accepted as Host.
func TestHTTPRefusesForeignHost(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := observe.StartHTTP(ctx, observe.HTTPOptions{Addr: "127.0.0.1:0", Metrics: observe.NewMetrics(), Health: &observe.Health{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for host, want := range map[string]int{
		"attacker.example": http.StatusMisdirectedRequest, "attacker.example:9143": http.StatusMisdirectedRequest,
		"10.0.0.1": http.StatusMisdirectedRequest, "localhost:9143": http.StatusOK, s.Addr().String(): http.StatusOK,
		"[::1]:9143": http.StatusOK,
	} {
		req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+"/metrics", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %q: status %d, want %d", host, resp.StatusCode, want)
		}
	}
}

// TestHealthReusesResults: however often /healthz is asked, the checks (which reach the upstream server and
// Vault) run at most once per Interval.
func TestHealthReusesResults(t *testing.T) {
	var runs atomic.Int32
	h := &observe.Health{Interval: time.Hour}
	h.SetReady(true, "")
	h.AddCheck("upstream", func(context.Context) error { runs.Add(1); return nil })
	for range 20 {
		if ok, _ := h.Check(context.Background()); !ok {
			t.Fatal("not ready")
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("check ran %d times, want 1", n)
	}
	h.Interval = -1
	h.Check(context.Background())
	h.Check(context.Background())
	if n := runs.Load(); n != 3 {
		t.Errorf("check ran %d times without reuse, want 3", n)
	}
}
