// Package observe owns smimeproxy's operational surface: structured logging (log/slog, text or JSON), the
// redaction of secrets in logs, Prometheus metrics on a private registry, and an optional loopback HTTP
// listener serving /metrics (Prometheus text exposition format) and /healthz (readiness).
//
// It reads no flags or environment; cmd/smimeproxy maps flags onto LogOptions and HTTPOptions. Every Metrics
// and Health method is safe on a nil receiver, so libraries may call them without checking whether
// observability is enabled.
//
// Implementation notes: the HTTP listener refuses non-loopback addresses unless told otherwise, because
// metrics reveal activity (logins, message counts) and /healthz reveals upstream and Vault state; it has no
// authentication of its own.
package observe
