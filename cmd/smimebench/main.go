package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/proxy"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // setup or correctness failure (a missed goal is not one)
	exitUsage  = 2
)

// config is the parsed command line.
type config struct {
	n, size, big  int
	vault         bool
	batch, rounds int
	passes        int
	sample        int
	cpuProfile    string
	serveEnv      []string // extra environment of the smimeproxy serve child, e.g. GOGC=50
	serveLogDir   string   // where the children's logs go (default: a temporary directory)
	serveBin      string   // a prebuilt smimeproxy binary (default: go build ./cmd/smimeproxy)
}

// envList is a repeatable KEY=VALUE flag.
type envList []string

func (e *envList) String() string { return fmt.Sprint(*e) }

func (e *envList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	*e = append(*e, v)
	return nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

var progressOut io.Writer = os.Stderr

// progress reports a step on stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(progressOut, "smimebench: %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func parse(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("smimebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.IntVar(&c.n, "n", 1000, "number of encrypted messages (and as many plain twins)")
	fs.IntVar(&c.size, "size", 100000, "size in bytes of each encrypted message (the plain twin is about 57/78 of it)")
	fs.IntVar(&c.big, "big", 50000000, "size in bytes of the encrypted message whose peak RSS is measured (0: skip)")
	fs.BoolVar(&c.vault, "vault", true, "keep the key in a Vault dev server (KV) through vaultcfg; false: keystore.Memory (the RSS step still uses Vault)")
	quick := fs.Bool("quick", false, "smoke run: n=50, big=5000000 unless given")
	fs.IntVar(&c.batch, "batch", 100, "UIDs per UID FETCH")
	fs.IntVar(&c.rounds, "rounds", 3, "timed rounds of the fetch phases (fresh proxy, key store and decrypt cache each); medians are reported")
	fs.IntVar(&c.passes, "passes", 3, "passes of every phase except the first fetch in each round; the fastest counts")
	fs.IntVar(&c.sample, "openssl-sample", 100, "messages decrypted by openssl processes")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (proxy and client) during the first fetch of round 1")
	fs.Var((*envList)(&c.serveEnv), "serve-env", "KEY=VALUE added to the environment of the smimeproxy serve child (repeatable), e.g. GOGC=50 to see how much of its peak is garbage")
	fs.StringVar(&c.serveLogDir, "serve-log-dir", "", "keep the smimeproxy serve children's logs (serveN.log) in this directory")
	fs.StringVar(&c.serveBin, "serve-bin", "", "smimeproxy binary for the peak-RSS step (default: go build ./cmd/smimeproxy from this checkout)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: smimebench [-quick] [-n 1000] [-size 100000] [-big 50000000] [-vault=false] [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("smimebench: unexpected argument %q", fs.Arg(0))
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["n"] {
			c.n = 50
		}
		if !set["big"] {
			c.big = 5000000
		}
	}
	if c.n < 1 || c.size < 2000 || c.big < 0 || c.batch < 1 || c.rounds < 1 || c.passes < 1 || c.sample < 1 {
		return c, errors.New("smimebench: -n, -batch, -rounds, -passes, -openssl-sample must be positive, -size at least 2000, -big not negative")
	}
	// smime.DefaultMaxSize (64 MiB) bounds what the proxy decrypts.
	if c.big > 60<<20 {
		return c, errors.New("smimebench: -big above 60 MiB exceeds what the proxy decrypts")
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	progressOut = stderr
	cfg, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := testenv.NewProgram(stderr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-sig:
			progress("interrupted: stopping Dovecot, Vault and children")
			cancel()
			p.RunCleanups()
			os.Exit(exitFailed)
		case <-done:
		}
	}()
	var res *results
	err = p.Run(func() {
		r, err := bench(ctx, p, cfg)
		if err != nil {
			p.Fatalf("%v", err)
		}
		res = r
	})
	if err != nil || res == nil {
		fmt.Fprintln(stderr, "smimebench: FAILED (setup or correctness); see above")
		return exitFailed
	}
	res.print(stdout)
	return exitOK
}

// round is one timed pass of every fetch phase.
type round struct {
	directPlain, directEnc   phaseResult
	proxyPlain1, proxyPlain2 phaseResult
	first, second            phaseResult
	floor                    time.Duration // mean of the floor before and after the first fetch
	openssl                  time.Duration // per message
}

// results is everything the table prints.
type results struct {
	cfg              config
	store            string
	encAvg, plainAvg int
	rounds           []round
	rss              *rssResult
	cacheEntries     int
}

func bench(ctx context.Context, tb testenv.TB, cfg config) (*results, error) {
	res := &results{cfg: cfg, store: "memory (keystore.Memory)"}
	if cfg.vault {
		res.store = "Vault KV (dev server, vaultcfg)"
	}
	progress("n=%d size=%d big=%d store=%s rounds=%d batch=%d, GOMAXPROCS=%d", cfg.n, cfg.size, cfg.big, res.store,
		cfg.rounds, cfg.batch, runtime.GOMAXPROCS(0))
	id, err := newIdentity(benchUser + "@example.org")
	if err != nil {
		return nil, err
	}
	progress("generating %d encrypted messages of ~%d bytes and their plain twins", cfg.n, cfg.size)
	twins := make([]twin, cfg.n)
	var encTotal, plainTotal int
	for i := range twins {
		if twins[i], err = makeTwin(i, cfg.size, id.cert); err != nil {
			return nil, err
		}
		encTotal += len(twins[i].enc)
		plainTotal += len(twins[i].plain)
	}
	res.encAvg, res.plainAvg = encTotal/cfg.n, plainTotal/cfg.n
	var big twin
	if cfg.big > 0 {
		progress("generating the %d-byte encrypted message", cfg.big)
		if big, err = makeTwin(cfg.n, cfg.big, id.cert); err != nil {
			return nil, err
		}
	}

	progress("starting Dovecot and seeding %d messages into its maildirs", 2*cfg.n+min(cfg.big, 1))
	d := testenv.StartDovecot(tb, testenv.DovecotOptions{Users: map[string]string{benchUser: benchPassword}, NoTLS: true})
	encLF, plainLF := make([][]byte, cfg.n), make([][]byte, cfg.n)
	for i, t := range twins {
		encLF[i], plainLF[i] = toLF(t.enc), toLF(t.plain)
	}
	d.SeedMaildir(benchUser, "INBOX", encLF)
	d.SeedMaildir(benchUser, plainMailbox, plainLF)
	encLF, plainLF = nil, nil
	if cfg.big > 0 {
		d.SeedMaildir(benchUser, bigMailbox, [][]byte{toLF(big.enc)})
	}

	var v *testenv.Vault
	var mem *keystore.Memory
	openStore := func() (keystore.Store, func(), error) {
		if !cfg.vault {
			return mem, func() {}, nil
		}
		s, err := vaultcfg.Open(ctx, vaultcfg.Config{Addr: v.Addr(), Token: v.RootToken()})
		if err != nil {
			return nil, nil, fmt.Errorf("smimebench: %w", err)
		}
		return s, s.Close, nil
	}
	chain := []*x509.Certificate{id.cert}
	if cfg.vault {
		progress("starting a Vault dev server and storing the key in KV")
		v = testenv.StartVault(tb)
	} else {
		mem = keystore.NewMemory()
	}
	{
		s, closeStore, err := openStore()
		if err != nil {
			return nil, err
		}
		_, err = s.Put(ctx, benchUser, chain, id.key, keystore.PutOptions{})
		closeStore()
		if err != nil {
			return nil, fmt.Errorf("smimebench: storing the key: %w", err)
		}
	}

	progress("warming Dovecot (index, BODYSTRUCTURE, page cache) with direct fetches")
	dPlain, err := openSession(d.Addr(), plainMailbox, cfg.n)
	if err != nil {
		return nil, err
	}
	defer dPlain.close()
	dEnc, err := openSession(d.Addr(), "INBOX", cfg.n)
	if err != nil {
		return nil, err
	}
	defer dEnc.close()
	if _, err := dPlain.fetchAll(cfg.batch, plainChecker(twins), true); err != nil {
		return nil, err
	}
	if _, err := dEnc.fetchAll(cfg.batch, rawChecker(twins), true); err != nil {
		return nil, err
	}

	osl, err := prepareOpenssl(tb.TempDir(), id, twins[:min(cfg.sample, cfg.n)])
	if err != nil {
		return nil, err
	}
	for r := range cfg.rounds {
		rd, entries, err := fetchRound(ctx, tb, cfg, r, d, openStore, dPlain, dEnc, twins, id, osl)
		if err != nil {
			return nil, err
		}
		res.rounds = append(res.rounds, rd)
		res.cacheEntries = entries
		progress("round %d: direct plain %v, proxy plain %v/%v, 1st %v, 2nd %v, floor %v, openssl %v (per message)", r+1,
			rd.directPlain.perMsg(), rd.proxyPlain1.perMsg(), rd.proxyPlain2.perMsg(), rd.first.perMsg(),
			rd.second.perMsg(), rd.floor/time.Duration(cfg.n), rd.openssl)
	}

	if cfg.big > 0 {
		if v == nil {
			progress("starting a Vault dev server for the smimeproxy serve child")
			v = testenv.StartVault(tb)
		}
		rss, err := measureRSS(ctx, tb, tb.TempDir(), d.Addr(), v, id, big, cfg.serveEnv, cfg.rounds, cfg.serveLogDir, cfg.serveBin)
		if err != nil {
			return nil, err
		}
		res.rss = &rss
	}
	return res, nil
}

// fetchRound runs every timed fetch phase once with a fresh key store, Decrypter and in-process proxy.
func fetchRound(ctx context.Context, tb testenv.TB, cfg config, r int, d *testenv.Dovecot,
	openStore func() (keystore.Store, func(), error), dPlain, dEnc *session, twins []twin, id *identity, osl *opensslRun) (round, int, error) {
	var rd round
	store, closeStore, err := openStore()
	if err != nil {
		return rd, 0, err
	}
	defer closeStore()
	dec, err := decrypt.New(decrypt.Options{Store: store})
	if err != nil {
		return rd, 0, err
	}
	srv, err := proxy.New(proxy.Options{
		Upstream:        backend.Options{URL: "imap://" + d.Addr()},
		Logger:          slog.New(slog.NewTextHandler(progressOut, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Rewriter:        dec,
		CandidateFilter: dec,
		CacheProbe:      dec,
		HeaderGuard:     dec,
		AppendGuard:     dec,
		TextMatcher:     dec,
		HeaderMatcher:   dec,
		DerivedCache:    dec,
		MetaSource:      dec,
		MetaPruner:      dec,
		IndexStore:      dec,
		StoredText:      dec,
	})
	if err != nil {
		return rd, 0, fmt.Errorf("smimebench: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return rd, 0, fmt.Errorf("smimebench: %w", err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	pPlain, err := openSession(ln.Addr().String(), plainMailbox, cfg.n)
	if err != nil {
		return rd, 0, err
	}
	defer pPlain.close()
	pEnc, err := openSession(ln.Addr().String(), "INBOX", cfg.n)
	if err != nil {
		return rd, 0, err
	}
	defer pEnc.close()
	plain, raw, decrypted := plainChecker(twins), rawChecker(twins), decryptedChecker(twins)
	if r == 0 {
		progress("round 1: warming the proxy path with plain fetches")
		if _, err := pPlain.fetchAll(cfg.batch, plain, false); err != nil {
			return rd, 0, err
		}
	}
	// step runs a phase passes times and keeps the fastest pass (noise on a shared machine only adds time);
	// the first fetch, which can happen only once per Decrypter, runs once.
	step := func(name string, s *session, c checker, out *phaseResult, passes int) error {
		progress("round %d/%d: %s", r+1, cfg.rounds, name)
		for i := range passes {
			res, err := s.fetchAll(cfg.batch, c, false)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if i == 0 || res.dur < out.dur {
				*out = res
			}
		}
		return nil
	}
	if err := step("plain, direct from Dovecot", dPlain, plain, &rd.directPlain, cfg.passes); err != nil {
		return rd, 0, err
	}
	if err := step("plain through the proxy", pPlain, plain, &rd.proxyPlain1, cfg.passes); err != nil {
		return rd, 0, err
	}
	// The floor is measured right before and right after the first fetch (their mean is used), so that a
	// change of machine speed (shared cores) affects both sides of the goal alike.
	progress("round %d/%d: crypto floor over %d messages", r+1, cfg.rounds, cfg.n)
	floorBefore, err := cryptoFloor(id.key, twins)
	if err != nil {
		return rd, 0, err
	}
	if r == 0 && cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return rd, 0, fmt.Errorf("smimebench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return rd, 0, fmt.Errorf("smimebench: %w", err)
		}
	}
	err = step("encrypted through the proxy, first fetch (decrypting)", pEnc, decrypted, &rd.first, 1)
	if r == 0 && cfg.cpuProfile != "" {
		pprof.StopCPUProfile()
		progress("CPU profile of the first fetch written to %s", cfg.cpuProfile)
	}
	if err != nil {
		return rd, 0, err
	}
	progress("round %d/%d: crypto floor over %d messages, again", r+1, cfg.rounds, cfg.n)
	floorAfter, err := cryptoFloor(id.key, twins)
	if err != nil {
		return rd, 0, err
	}
	rd.floor = (floorBefore + floorAfter) / 2
	progress("round %d/%d: openssl cms -decrypt, %d processes", r+1, cfg.rounds, len(osl.files))
	if rd.openssl, err = osl.run(ctx); err != nil {
		return rd, 0, err
	}
	entries, _ := dec.CacheStats()
	if err := step("encrypted through the proxy, second fetch (cached)", pEnc, decrypted, &rd.second, cfg.passes); err != nil {
		return rd, 0, err
	}
	if err := step("plain through the proxy, again", pPlain, plain, &rd.proxyPlain2, cfg.passes); err != nil {
		return rd, 0, err
	}
	if err := step("encrypted, direct from Dovecot", dEnc, raw, &rd.directEnc, cfg.passes); err != nil {
		return rd, 0, err
	}
	return rd, entries, nil
}

// median returns the median of the values f picks from rounds.
func median(rounds []round, f func(round) time.Duration) time.Duration {
	v := make([]time.Duration, len(rounds))
	for i, r := range rounds {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
