package observe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

// DefaultHTTPListen is the conventional metrics address (loopback; port 9143 after IMAP's 143).
const DefaultHTTPListen = "127.0.0.1:9143"

// Timeouts of the HTTP listener. Scrapes and health probes are small; these only bound slow or stuck clients.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpIdleTimeout       = 60 * time.Second
	// CheckTimeout bounds each readiness check run by /healthz.
	CheckTimeout = 5 * time.Second
	// CheckInterval is how long a /healthz result is reused: probes do not reach the upstream server and
	// Vault more often than this, however often /healthz is asked.
	CheckInterval = 10 * time.Second
)

// ErrNotLoopback is returned by Listen for a non-loopback address without AllowRemote.
var ErrNotLoopback = errors.New("observe: metrics listener address is not loopback (use a 127.0.0.1 or [::1] address, or allow remote access explicitly)")

// Health is the readiness state served at /healthz: ready when the server said so (SetReady) and every check
// passes. The zero value is not ready and has no checks. Methods are safe for concurrent use and on nil.
type Health struct {
	// Timeout bounds each check (CheckTimeout if zero). Set it before first use.
	Timeout time.Duration
	// Interval is how long the checks' results are reused (CheckInterval if zero, none if negative).
	Interval time.Duration

	mu     sync.Mutex
	ready  bool
	reason string
	checks map[string]func(context.Context) error

	runMu   sync.Mutex // one run of the checks at a time
	last    []CheckResult
	lastRun time.Time
}

// SetReady records whether the server is ready (e.g. listening and able to reach upstream); reason says why not
// and is shown by /healthz.
func (h *Health) SetReady(ready bool, reason string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.ready, h.reason = ready, reason
	h.mu.Unlock()
}

// AddCheck adds a named readiness check run on every /healthz request, bounded by Timeout. Its error message
// is shown to the HTTP client, so it must not contain secrets.
func (h *Health) AddCheck(name string, check func(context.Context) error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	if h.checks == nil {
		h.checks = map[string]func(context.Context) error{}
	}
	h.checks[name] = check
	h.mu.Unlock()
}

// CheckResult is one line of a health report.
type CheckResult struct {
	Name string
	Err  error
}

// Check runs every check (concurrently) and reports readiness: ok is true when SetReady(true) was called and
// every check passed.
func (h *Health) Check(ctx context.Context) (ok bool, results []CheckResult) {
	if h == nil {
		return false, []CheckResult{{Name: "server", Err: errors.New("no health state")}}
	}
	h.mu.Lock()
	ready, reason := h.ready, h.reason
	names := make([]string, 0, len(h.checks))
	for n := range h.checks {
		names = append(names, n)
	}
	checks := make([]func(context.Context) error, 0, len(names))
	sort.Strings(names)
	for _, n := range names {
		checks = append(checks, h.checks[n])
	}
	h.mu.Unlock()

	var srv error
	if !ready {
		if reason == "" {
			reason = "starting"
		}
		srv = errors.New("not ready: " + reason)
	}
	results = append(results, CheckResult{Name: "server", Err: srv})
	checked, allOK := h.runChecks(ctx, names, checks)
	return ready && allOK, append(results, checked...)
}

// runChecks runs the checks, or returns the results of a run younger than Interval.
func (h *Health) runChecks(ctx context.Context, names []string, checks []func(context.Context) error) (results []CheckResult, ok bool) {
	h.runMu.Lock()
	defer h.runMu.Unlock()
	interval := h.Interval
	if interval == 0 {
		interval = CheckInterval
	}
	if h.last != nil && len(h.last) == len(names) && time.Since(h.lastRun) < interval {
		results = h.last
	} else {
		results = h.runAll(ctx, names, checks)
		h.last, h.lastRun = results, time.Now()
	}
	ok = true
	for _, r := range results {
		ok = ok && r.Err == nil
	}
	return results, ok
}

func (h *Health) runAll(ctx context.Context, names []string, checks []func(context.Context) error) []CheckResult {
	var results []CheckResult
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = CheckTimeout
	}
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			errs[i] = runCheck(cctx, c)
		}()
	}
	wg.Wait()
	for i, n := range names {
		results = append(results, CheckResult{Name: n, Err: errs[i]})
	}
	return results
}

func runCheck(ctx context.Context, c func(context.Context) error) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("check panicked: %v", r)
			}
		}()
		done <- c(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("timed out: %w", ctx.Err())
	}
}

// ServeHTTP answers 200 "ready" or 503 "not ready", followed by one "name: ok" or "name: error" line per check.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ok, results := h.Check(r.Context())
	var b strings.Builder
	status := http.StatusOK
	if ok {
		b.WriteString("ready\n")
	} else {
		status = http.StatusServiceUnavailable
		b.WriteString("not ready\n")
	}
	for _, res := range results {
		if res.Err == nil {
			fmt.Fprintf(&b, "%s: ok\n", res.Name)
		} else {
			fmt.Fprintf(&b, "%s: %s\n", res.Name, strings.ReplaceAll(res.Err.Error(), "\n", " "))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(b.String()))
	}
}

// HTTPOptions configure StartHTTP.
type HTTPOptions struct {
	// Addr is the host:port to listen on (DefaultHTTPListen if empty). Port 0 picks a free port.
	Addr string
	// AllowRemote permits a non-loopback Addr. The endpoints have no authentication.
	AllowRemote bool
	// Metrics is served at /metrics (404 if nil).
	Metrics *Metrics
	// Health is served at /healthz (always 503 if nil).
	Health *Health
	// Logger receives listener errors (default: discard).
	Logger *slog.Logger
}

// HTTPServer is a running metrics/health listener.
type HTTPServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// CheckLoopback returns ErrNotLoopback unless addr's host is a loopback IP or "localhost". An empty host
// (all interfaces) is not loopback.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("observe: bad listen address %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("%w: %s", ErrNotLoopback, addr)
	}
	return nil
}

// loopbackHostOnly refuses requests whose Host header does not name a loopback address or localhost: a web
// page the user visits cannot read the endpoints through a DNS name rebound to 127.0.0.1 (DNS rebinding).
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		ip, err := netip.ParseAddr(host)
		if !strings.EqualFold(host, "localhost") && (err != nil || !ip.Unmap().IsLoopback()) {
			http.Error(w, "misdirected request: use a loopback address or localhost", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// StartHTTP listens on o.Addr and serves /metrics and /healthz until ctx ends or Close is called. It fails when
// the address is not loopback (without AllowRemote) or cannot be bound.
func StartHTTP(ctx context.Context, o HTTPOptions) (*HTTPServer, error) {
	addr := o.Addr
	if addr == "" {
		addr = DefaultHTTPListen
	}
	if !o.AllowRemote {
		if err := CheckLoopback(addr); err != nil {
			return nil, err
		}
	}
	logger := o.Logger
	if logger == nil {
		logger = Discard
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("observe: %w", err)
	}
	mux := http.NewServeMux()
	var handler http.Handler = mux
	if !o.AllowRemote {
		handler = loopbackHostOnly(mux)
	}
	mux.Handle("/metrics", o.Metrics.Handler())
	mux.Handle("/healthz", o.Health)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "smimeproxy: /metrics (Prometheus), /healthz (readiness)")
	})
	s := &HTTPServer{
		srv: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: httpReadHeaderTimeout,
			WriteTimeout:      httpWriteTimeout,
			IdleTimeout:       httpIdleTimeout,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
			BaseContext:       func(net.Listener) context.Context { return ctx },
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics listener stopped", "err", err)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.done:
		}
	}()
	logger.Info("metrics listener started", "addr", ln.Addr().String())
	return s, nil
}

// Addr returns the bound address (useful with port 0).
func (s *HTTPServer) Addr() net.Addr { return s.ln.Addr() }

// Close stops the listener, letting in-flight requests finish for up to a second, and waits for it.
func (s *HTTPServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	<-s.done
	return err
}
