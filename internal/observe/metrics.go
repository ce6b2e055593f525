package observe

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsNamespace prefixes every metric name.
const MetricsNamespace = "smimeproxy"

// Metrics are the proxy's Prometheus metrics on a private registry (plus the Go runtime and process
// collectors). All methods are safe for concurrent use and do nothing on a nil *Metrics.
type Metrics struct {
	reg *prometheus.Registry

	sessionsActive prometheus.Gauge
	sessionsTotal  prometheus.Counter
	loginsOK       prometheus.Counter
	loginsFailed   prometheus.Counter
	upstreamErrors prometheus.Counter
	decrypted      prometheus.Counter
	undecryptable  *prometheus.CounterVec
	cacheHits      prometheus.Counter
	cacheMisses    prometheus.Counter
	cacheBytes     atomic.Pointer[func() int64] // read by the decrypt_cache_bytes gauge at scrape time
	vaultErrors    prometheus.Counter
}

// NewMetrics creates the metrics and their registry.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: MetricsNamespace, Name: name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: MetricsNamespace, Name: name, Help: help})
		m.reg.MustRegister(g)
		return g
	}
	m.sessionsActive = gauge("sessions_active", "Client IMAP connections open now.")
	m.sessionsTotal = counter("sessions_total", "Client IMAP connections accepted.")
	m.loginsOK = counter("logins_ok_total", "Client logins accepted by the upstream server.")
	m.loginsFailed = counter("logins_failed_total", "Client logins refused (by the upstream server or the proxy).")
	m.upstreamErrors = counter("upstream_errors_total", "Failures talking to the upstream IMAP server (connect, TLS, I/O, protocol).")
	m.decrypted = counter("messages_decrypted_total", "Encrypted messages served decrypted.")
	m.undecryptable = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: MetricsNamespace, Name: "messages_undecryptable_total",
		Help: "Encrypted messages served with a 'could not decrypt' status instead, by reason (as in the status header)."}, []string{"reason"})
	m.reg.MustRegister(m.undecryptable)
	m.cacheHits = counter("decrypt_cache_hits_total", "Decrypted messages served from the in-memory cache.")
	m.cacheMisses = counter("decrypt_cache_misses_total", "Decrypted-message cache misses (message decrypted again).")
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: MetricsNamespace, Name: "decrypt_cache_bytes",
		Help: "Bytes of plaintext held in the in-memory decrypt cache."}, func() float64 {
		if f := m.cacheBytes.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	}))
	m.vaultErrors = counter("vault_errors_total", "Failed Vault requests (unreachable, denied, bad response).")
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the private registry, for registering more collectors or gathering in tests.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the metrics in the Prometheus exposition format; on a nil *Metrics it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// SessionStarted counts an accepted client connection; call SessionEnded when it closes.
func (m *Metrics) SessionStarted() {
	if m != nil {
		m.sessionsTotal.Inc()
		m.sessionsActive.Inc()
	}
}

// SessionEnded marks the end of a connection counted by SessionStarted.
func (m *Metrics) SessionEnded() {
	if m != nil {
		m.sessionsActive.Dec()
	}
}

// Login counts a client login by its outcome.
func (m *Metrics) Login(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.loginsOK.Inc()
	} else {
		m.loginsFailed.Inc()
	}
}

// UpstreamError counts a failure talking to the upstream server.
func (m *Metrics) UpstreamError() {
	if m != nil {
		m.upstreamErrors.Inc()
	}
}

// Decrypted counts a message served decrypted.
func (m *Metrics) Decrypted() {
	if m != nil {
		m.decrypted.Inc()
	}
}

// Undecryptable counts a message served undecryptable for reason (no-matching-key, corrupt, unsupported,
// too-large, key-unavailable); the reason is a label.
func (m *Metrics) Undecryptable(reason string) {
	if m == nil {
		return
	}
	if reason == "" {
		reason = "unknown"
	}
	m.undecryptable.WithLabelValues(reason).Inc()
}

// CacheHit counts a decrypt-cache hit.
func (m *Metrics) CacheHit() {
	if m != nil {
		m.cacheHits.Inc()
	}
}

// CacheMiss counts a decrypt-cache miss.
func (m *Metrics) CacheMiss() {
	if m != nil {
		m.cacheMisses.Inc()
	}
}

// CacheBytesFrom makes the decrypt_cache_bytes gauge call bytes at every scrape (prometheus.GaugeFunc), so it is
// never stale and nothing polls the cache. Without it the gauge reads 0. bytes must be safe for concurrent use.
func (m *Metrics) CacheBytesFrom(bytes func() int64) {
	if m != nil {
		m.cacheBytes.Store(&bytes)
	}
}

// VaultError counts a failed Vault request.
func (m *Metrics) VaultError() {
	if m != nil {
		m.vaultErrors.Inc()
	}
}
