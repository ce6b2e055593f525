package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/smimeproxy/smimeproxy/internal/observe"
)

// observeFlags are the logging and metrics options of long-running commands (serve, demo).
type observeFlags struct {
	logFormat, logLevel string
	metricsListen       string
	metricsAllowRemote  bool
}

// addObserveFlags registers --log-format, --log-level, --metrics-listen and --metrics-allow-remote on fs.
func addObserveFlags(fs *flag.FlagSet) *observeFlags {
	o := &observeFlags{}
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json (logs go to stderr)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus /metrics and /healthz on this address, e.g. "+observe.DefaultHTTPListen+" (empty: off)")
	fs.BoolVar(&o.metricsAllowRemote, "metrics-allow-remote", false, "allow --metrics-listen on a non-loopback address (the endpoints have no authentication)")
	return o
}

// logger builds the logger the flags ask for, writing to env.stderr.
func (o *observeFlags) logger(env *cmdEnv) (*slog.Logger, error) {
	return observe.NewLogger(env.stderr, observe.LogOptions{Format: o.logFormat, Level: o.logLevel})
}

// startHTTP starts the metrics/health listener when --metrics-listen is set; stop is never nil. It runs until
// ctx ends or stop is called.
func (o *observeFlags) startHTTP(ctx context.Context, m *observe.Metrics, h *observe.Health, logger *slog.Logger) (stop func(), err error) {
	if o.metricsListen == "" {
		return func() {}, nil
	}
	srv, err := observe.StartHTTP(ctx, observe.HTTPOptions{
		Addr: o.metricsListen, AllowRemote: o.metricsAllowRemote, Metrics: m, Health: h, Logger: logger,
	})
	if err != nil {
		return func() {}, err
	}
	return func() { _ = srv.Close() }, nil
}
