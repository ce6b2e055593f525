package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Goals of issue 6.
const (
	goalFirstOverFloor   = 2.0 // first-fetch overhead per message ≤ 2× the crypto floor
	goalSecondOverPlain  = 1.1 // second fetch ≤ 1.1× plain through the proxy
	goalOpensslOverProxy = 4.0 // openssl per message ≥ 4× the proxy's first fetch per message
	goalRSSOverSize      = 2.5 // peak RSS ≤ 2.5× the big message
)

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func (res *results) print(w io.Writer) {
	cfg := res.cfg
	n := time.Duration(cfg.n)
	med := func(f func(round) time.Duration) time.Duration { return median(res.rounds, f) }
	directPlain := med(func(r round) time.Duration { return r.directPlain.dur })
	directEnc := med(func(r round) time.Duration { return r.directEnc.dur })
	plain := med(func(r round) time.Duration { return (r.proxyPlain1.dur + r.proxyPlain2.dur) / 2 })
	first := med(func(r round) time.Duration { return r.first.dur })
	second := med(func(r round) time.Duration { return r.second.dur })
	floor := med(func(r round) time.Duration { return r.floor })
	openssl := med(func(r round) time.Duration { return r.openssl })
	overhead := (first - plain) / n

	fmt.Fprintf(w, "smimebench: %d encrypted messages of %d bytes on average (plain twins %d bytes), batches of %d UIDs,\n",
		cfg.n, res.encAvg, res.plainAvg, cfg.batch)
	fmt.Fprintf(w, "key store %s, median of %d rounds (each phase the fastest of %d passes, the 1st fetch one pass),\n",
		res.store, len(res.rounds), cfg.passes)
	fmt.Fprintf(w, "GOMAXPROCS=%d, %s/%s\n\n", runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\ttotal\tper message\tMB/s served\t")
	row := func(name string, d time.Duration, per time.Duration, bytes int64) {
		rate := "-"
		if bytes > 0 && d > 0 {
			rate = fmt.Sprintf("%.0f", float64(bytes)/d.Seconds()/1e6)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", name, ms(d), us(per), rate)
	}
	last := res.rounds[len(res.rounds)-1]
	row("plain, direct from Dovecot", directPlain, directPlain/n, last.directPlain.bytes)
	row("encrypted, direct from Dovecot", directEnc, directEnc/n, last.directEnc.bytes)
	row("plain through the proxy", plain, plain/n, last.proxyPlain1.bytes)
	row("encrypted through the proxy, 1st fetch", first, first/n, last.first.bytes)
	if len(res.rounds) > 1 {
		r1 := res.rounds[0].first.dur
		row("  the same, round 1 alone (process heap still cold)", r1, r1/n, res.rounds[0].first.bytes)
	}
	row("encrypted through the proxy, 2nd fetch", second, second/n, last.second.bytes)
	row("crypto floor (RSA + base64 + AES, in-process)", floor, floor/n, 0)
	k := min(cfg.sample, cfg.n)
	row(fmt.Sprintf("openssl cms -decrypt, a process per message (%d sampled)", k), openssl*time.Duration(k), openssl, 0)
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ratio\tvalue\t\n")
	fmt.Fprintf(tw, "plain through the proxy ÷ plain direct\t%.2fx\t\n", float64(plain)/float64(directPlain))
	fmt.Fprintf(tw, "encrypted 1st fetch through the proxy ÷ encrypted direct\t%.2fx\t\n", float64(first)/float64(directEnc))
	if len(res.rounds) > 1 {
		r0 := res.rounds[0]
		ov := (r0.first.dur - (r0.proxyPlain1.dur+r0.proxyPlain2.dur)/2) / n
		fmt.Fprintf(tw, "round 1 alone: 1st fetch overhead per message ÷ its crypto floor\t%.2fx\t\n", float64(ov)/float64(r0.floor/n))
	}
	fmt.Fprintf(tw, "decrypt cache after the 1st fetch\t%d of %d messages\t\n", res.cacheEntries, cfg.n)
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "goal\tmeasured\tlimit\tresult\t\n")
	r1 := float64(overhead) / float64(floor/n)
	fmt.Fprintf(tw, "1st fetch overhead per message (enc − plain through proxy) ÷ crypto floor\t%s ÷ %s = %.2fx\t≤ %.1fx\t%s\t\n",
		us(overhead), us(floor/n), r1, goalFirstOverFloor, passMiss(r1 <= goalFirstOverFloor))
	r2 := float64(second) / float64(plain)
	fmt.Fprintf(tw, "2nd fetch ÷ plain through the proxy\t%.2fx\t≤ %.1fx\t%s\t\n", r2, goalSecondOverPlain, passMiss(r2 <= goalSecondOverPlain))
	r3 := float64(openssl) / float64(first/n)
	fmt.Fprintf(tw, "openssl process per message ÷ proxy 1st fetch per message (IMAP included)\t%s ÷ %s = %.1fx\t≥ %.1fx\t%s\t\n",
		us(openssl), us(first/n), r3, goalOpensslOverProxy, passMiss(r3 >= goalOpensslOverProxy))
	if rs := res.rss; rs != nil {
		r4 := float64(rs.peak) / float64(rs.msgSize)
		fmt.Fprintf(tw, "peak RSS (VmHWM, median of %d children) of smimeproxy serve ÷ the %s encrypted message\t%s = %.2fx\t≤ %.1fx\t%s\t\n",
			len(res.rounds), mb(rs.msgSize), mb(rs.peak), r4, goalRSSOverSize, passMiss(r4 <= goalRSSOverSize))
		if len(cfg.serveEnv) > 0 {
			fmt.Fprintf(tw, "  (serve child run with %s)\t\t\t\t\n", strings.Join(cfg.serveEnv, " "))
		}
		fmt.Fprintf(tw, "  (before the fetch: RSS %s, HWM %s; growth ÷ size %.2fx)\t\t\t\t\n", mb(rs.baseRSS), mb(rs.baseHWM),
			float64(rs.peak-rs.baseRSS)/float64(rs.msgSize))
	} else {
		fmt.Fprintf(tw, "peak RSS\tnot measured (-big 0)\t≤ %.1fx\t-\t\n", goalRSSOverSize)
	}
	tw.Flush()
	fmt.Fprintln(w, strings.TrimSpace(`
Every served message was checked: decrypted ones carry the decrypted status and their plain twin's body.`))
}
