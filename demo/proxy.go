package demo

import (
	"errors"
	"log/slog"
	"net"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/proxy"
)

// startProxy serves the proxy on ln, relaying to the upstream server over plaintext loopback.
func (d *Demo) startProxy(ln net.Listener, rw *decrypt.Decrypter, log *slog.Logger) error {
	srv, err := proxy.New(proxy.Options{
		Upstream: backend.Options{URL: "imap://" + d.upstream},
		Logger:   log,
		// The Decrypter is the Rewriter and every one of its helpers (proxy/hooks.go).
		Rewriter:        rw,
		CandidateFilter: rw,
		CacheProbe:      rw,
		HeaderGuard:     rw,
		AppendGuard:     rw,
		TextMatcher:     rw,
		HeaderMatcher:   rw,
		DerivedCache:    rw,
		MetaSource:      rw,
		MetaPruner:      rw,
		IndexStore:      rw,
		StoredText:      rw,
	})
	if err != nil {
		return err
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			log.Warn("demo: proxy stopped", slog.Any("err", err))
		}
	}()
	d.closers = append(d.closers, srv.Close)
	return nil
}
