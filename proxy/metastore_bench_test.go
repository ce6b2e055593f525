package proxy_test

import (
	"os"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/metastore"
)

// BenchmarkHeaderSyncMetaStore measures, side by side in one run, Thunderbird's header sync (UID FETCH 1:*
// (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (...)])) over a mailbox of encrypted 15 KB messages
// (SMIMEPROXY_BENCH_MESSAGES, default 5000; issue 13's goal is stated for 20000): Dovecot direct; through the
// proxy without a metadata store (the first sync decrypts everything); with the store: the first sync, a sync
// after a restart, and one after a restart with a 16 MiB memory cache; then a SEARCH BODY after the restart
// (answered from the store) beside the same search at Dovecot. Run with -benchtime=1x; the scenario runs once
// per iteration.
func BenchmarkHeaderSyncMetaStore(b *testing.B) {
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("SMIMEPROXY_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	d := testenv.StartDovecot(b, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(b, "alice")
	t0 := time.Now()
	seedMetaMailbox(b, d, id, n, 15<<10)
	b.Logf("seeded %d encrypted messages in %v", n, time.Since(t0).Round(time.Millisecond))
	total := n + 2
	opts := headerSync(false)
	syncOn := func(c *imapclient.Client) time.Duration {
		start := time.Now()
		if _, k := drain(b, c, opts); k != total {
			b.Fatalf("synced %d messages, want %d", k, total)
		}
		return time.Since(start)
	}
	open := func(addr string) *imapclient.Client {
		c := dial(b, addr, "alice", "alice-pw", nil)
		if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			b.Fatal(err)
		}
		return c
	}
	dc := open(d.Addr())
	syncOn(dc) // Dovecot's caches warm
	direct := func() time.Duration {
		var ts []time.Duration
		for range 3 {
			ts = append(ts, syncOn(dc))
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		return ts[1]
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ResetTimer()
	for range b.N {
		dir := b.TempDir()
		directT := direct()

		// Today: no metadata store.
		addr, srv := startProxy(b, d, id.decrypterWith(b, nil, 0, &countMetrics{}))
		today := syncOn(open(addr))
		srv.Close()

		// With the store: first sync (fills it).
		store := openMetaStore(b, dir)
		addr, srv = startProxy(b, d, id.decrypterWith(b, store, 0, &countMetrics{}))
		first := syncOn(open(addr))
		store.Flush()
		srv.Close()
		store.Close()

		// After a restart (default memory cache, empty), then with a 16 MiB cache.
		store = openMetaStore(b, dir)
		m := &countMetrics{}
		addr, srv = startProxy(b, d, id.decrypterWith(b, store, 0, m))
		restart := syncOn(open(addr))
		again := syncOn(open(addr))
		srv.Close()
		// Two more restarts of the proxy (the store stays open): the median of the three, less noisy.
		median := func(ts []time.Duration) time.Duration {
			sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
			return ts[len(ts)/2]
		}
		restarts := []time.Duration{restart}
		for range 2 {
			addr, srv = startProxy(b, d, id.decrypterWith(b, store, 0, m))
			restarts = append(restarts, syncOn(open(addr)))
			srv.Close()
		}
		var restarts16 []time.Duration
		var pc *imapclient.Client
		for range 3 {
			srv.Close()
			addr, srv = startProxy(b, d, id.decrypterWith(b, store, 16<<20, m))
			pc = open(addr)
			restarts16 = append(restarts16, syncOn(pc))
		}
		b.Logf("restarts %v, with a 16 MiB cache %v", restarts, restarts16)
		restart16 := median(restarts16)
		restartMed := median(restarts)
		// Dovecot searches the ciphertext (no hits, every body read); the proxy the served copies.
		search := func(c *imapclient.Client, want bool) time.Duration {
			start := time.Now()
			data, err := c.UIDSearch(&imap.SearchCriteria{Body: []string{"Quetzal 7"}}, nil).Wait()
			if err != nil || (len(data.AllUIDs()) > 0) != want {
				b.Fatalf("SEARCH BODY: %v, %d hits", err, len(data.AllUIDs()))
			}
			return time.Since(start)
		}
		searchT, searchDirect := search(pc, true), search(dc, false)
		srv.Close()
		if m.decrypted.Load() != 0 {
			b.Errorf("syncs after the restart decrypted %d messages", m.decrypted.Load())
		}
		directAfter := direct()
		store.Close()
		b.ReportMetric(ms(directT), "direct-ms")
		b.ReportMetric(ms(directAfter), "direct-after-ms")
		b.ReportMetric(ms(today), "today-first-ms")
		b.ReportMetric(ms(first), "store-first-ms")
		b.ReportMetric(ms(restart), "restart-ms")
		b.ReportMetric(ms(again), "restart-again-ms")
		b.ReportMetric(ms(restart16), "restart-16MiB-median3-ms")
		b.ReportMetric(ms(restartMed), "restart-median3-ms")
		b.ReportMetric(float64(restart)/float64(min(directT, directAfter)), "restart/direct")
		b.ReportMetric(float64(restartMed)/float64(min(directT, directAfter)), "restart-median3/direct")
		b.ReportMetric(float64(restart16)/float64(min(directT, directAfter)), "restart16/direct")
		b.ReportMetric(ms(searchT), "search-body-restart-ms")
		b.ReportMetric(ms(searchDirect), "search-body-direct-ms")
		if st, err := metastore.StatFile(dir, "alice"); err == nil {
			b.ReportMetric(float64(st.FileBytes)/float64(n), "store-B/msg")
		}
	}
}

// BenchmarkHeaderSyncFromStore is the steady state of BenchmarkHeaderSyncMetaStore: the header sync of a
// proxy whose metadata store holds every message (no memory cache), for profiling.
func BenchmarkHeaderSyncFromStore(b *testing.B) {
	n := 2000
	d := testenv.StartDovecot(b, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(b, "alice")
	seedMetaMailbox(b, d, id, n, 15<<10)
	store := openMetaStore(b, b.TempDir())
	defer store.Close()
	addr, srv := startProxy(b, d, id.decrypterWith(b, store, 0, &countMetrics{}))
	c := dial(b, addr, "alice", "alice-pw", nil)
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		b.Fatal(err)
	}
	drain(b, c, headerSync(false))
	store.Flush()
	srv.Close()
	addr, _ = startProxy(b, d, id.decrypterWith(b, store, -1, &countMetrics{}))
	benchTargets(b, 0, func(b *testing.B, c *imapclient.Client) {
		if _, k := drain(b, c, headerSync(false)); k != n+2 {
			b.Fatalf("synced %d", k)
		}
	}, func(b *testing.B) *imapclient.Client { return dial(b, d.Addr(), "alice", "alice-pw", nil) },
		func(b *testing.B) *imapclient.Client { return dial(b, addr, "alice", "alice-pw", nil) })
}

// BenchmarkHeaderSyncRestart is the sync after a restart alone, for profiling: the store is filled once, then
// each iteration starts a new proxy (its index empty, as after a restart) over the same store and syncs, beside
// the same sync at Dovecot (SMIMEPROXY_BENCH_MESSAGES, default 3000).
func BenchmarkHeaderSyncRestart(b *testing.B) {
	n := 3000
	if v, err := strconv.Atoi(os.Getenv("SMIMEPROXY_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	d := testenv.StartDovecot(b, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(b, "alice")
	seedMetaMailbox(b, d, id, n, 15<<10)
	open := func(addr string) *imapclient.Client {
		c := dial(b, addr, "alice", "alice-pw", nil)
		if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			b.Fatal(err)
		}
		return c
	}
	store := openMetaStore(b, b.TempDir())
	defer store.Close()
	addr, srv := startProxy(b, d, id.decrypterWith(b, store, 0, &countMetrics{}))
	drain(b, open(addr), headerSync(false))
	store.Flush()
	srv.Close()
	dc := open(d.Addr())
	drain(b, dc, headerSync(false))
	m := &countMetrics{}
	b.ResetTimer()
	var dt, pt time.Duration
	for range b.N {
		t0 := time.Now()
		drain(b, dc, headerSync(false))
		dt += time.Since(t0)
		b.StopTimer()
		addr, srv := startProxy(b, d, id.decrypterWith(b, store, 0, m))
		c := open(addr)
		b.StartTimer()
		t0 = time.Now()
		drain(b, c, headerSync(false))
		pt += time.Since(t0)
		b.StopTimer()
		c.Logout().Wait()
		srv.Close()
		b.StartTimer()
	}
	if m.decrypted.Load() != 0 {
		b.Errorf("syncs after a restart decrypted %d messages", m.decrypted.Load())
	}
	b.ReportMetric(float64(dt.Microseconds())/1000/float64(b.N), "direct-ms")
	b.ReportMetric(float64(pt.Microseconds())/1000/float64(b.N), "restart-ms")
	b.ReportMetric(float64(pt)/float64(dt), "restart/direct")
}

// BenchmarkFirstSyncCPU compares the CPU time of this process (relay, client, store writer) for a first
// header sync of 2,000 encrypted messages with the metadata store (which then stores each message's metadata
// and searchable text) and without it: wall-clock times of a first sync vary too much on a shared machine.
func BenchmarkFirstSyncCPU(b *testing.B) {
	d := testenv.StartDovecot(b, testenv.DovecotOptions{NoTLS: true})
	id := newMetaIdentity(b, "alice")
	seedMetaMailbox(b, d, id, 2000, 15<<10)
	open := func(addr string) *imapclient.Client {
		c := dial(b, addr, "alice", "alice-pw", nil)
		if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			b.Fatal(err)
		}
		return c
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var withStore, without time.Duration
	for range b.N {
		store := openMetaStore(b, b.TempDir())
		addr, srv := startProxy(b, d, id.decrypterWith(b, store, 0, &countMetrics{}))
		c := open(addr)
		c0 := cpu()
		drain(b, c, headerSync(false))
		store.Flush()
		withStore += cpu() - c0
		srv.Close()
		store.Close()
		addr, srv = startProxy(b, d, id.decrypterWith(b, nil, 0, &countMetrics{}))
		c = open(addr)
		c0 = cpu()
		drain(b, c, headerSync(false))
		without += cpu() - c0
		srv.Close()
	}
	b.ReportMetric(float64(withStore.Milliseconds())/float64(b.N), "store-cpu-ms")
	b.ReportMetric(float64(without.Milliseconds())/float64(b.N), "nostore-cpu-ms")
	b.ReportMetric(float64(withStore)/float64(without), "store/nostore")
}
