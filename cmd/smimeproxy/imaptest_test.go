package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// The imaptest tests measure the proxy with Dovecot's own IMAP protocol tester (github.com/dovecot/imaptest,
// built from ../shared/imaptest next to the repository, see its README): the scripted compliance groups must
// give through the proxy what they give against Dovecot directly, and the randomized multi-client stress run
// must find no error through the proxy, with plain and S/MIME-encrypted mail.
//
//	SMIMEPROXY_INTEGRATION=1 go test ./cmd/smimeproxy/ -run 'TestImaptest' -v
//
// SMIMEPROXY_IMAPTEST_DIR overrides where the scripts are; SMIMEPROXY_STRESS_FULL=1 adds 20-client stress runs.

const (
	// imaptestGroupTimeout bounds one compliance group (compliance.sh's GROUP_TIMEOUT); a group takes well
	// under a second against Dovecot, so only a hung group reaches it.
	imaptestGroupTimeout = 30 * time.Second
	// imaptestComplianceLimit bounds one compliance.sh run (71 groups).
	imaptestComplianceLimit = 20 * time.Minute
	// imaptestBuildLimit bounds build.sh (cold: apt-get install and a ~10 s build).
	imaptestBuildLimit = 10 * time.Minute
	// imaptestStressSecs is the length of one stress run.
	imaptestStressSecs = 30
	// imaptestKey is the key (and certificate) imported into Vault for the imaptest user; smime.mbox is
	// encrypted to its certificate.
	imaptestKey = cmsKeys + "rsa"
)

// imaptestUser returns the IMAP account imaptest logs in as: $IMAP_USER / $IMAP_PASS, default alice/alicepw
// (the scripts' defaults).
func imaptestUser() (string, string) {
	user, pass := os.Getenv("IMAP_USER"), os.Getenv("IMAP_PASS")
	if user == "" {
		user = "alice"
	}
	if pass == "" {
		pass = "alicepw"
	}
	return user, pass
}

// imaptestDir returns the directory of the imaptest scripts (../shared/imaptest next to the repository root)
// with imaptest built, and the built tree's directory of compliance test scripts. The imaptest tests belong to
// the integration tier (they skip in the fast tier, before anything is built); there it fails the test when the
// scripts are missing or the build fails.
func imaptestDir(t *testing.T) (dir, tests string) {
	t.Helper()
	testenv.RequireIntegration(t, "Dovecot, the Vault dev server and imaptest")
	dir = os.Getenv("SMIMEPROXY_IMAPTEST_DIR")
	if dir == "" {
		// The test runs in cmd/smimeproxy: the repository root is ../.., the shared directory is next to it.
		dir = filepath.Join("..", "..", "..", "shared", "imaptest")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		t.Fatalf("imaptest: no directory %s (Dovecot's imaptest scripts: build.sh, compliance.sh, stress.sh, "+
			"gen-mbox.py; expected at ../shared/imaptest next to the repository root, or set SMIMEPROXY_IMAPTEST_DIR)", abs)
	}
	for _, s := range []string{"build.sh", "compliance.sh", "stress.sh", "gen-mbox.py"} {
		if st, err := os.Stat(filepath.Join(abs, s)); err != nil || st.Mode()&0o111 == 0 {
			t.Fatalf("imaptest: %s is missing or not executable (%v)", filepath.Join(abs, s), err)
		}
	}
	r := runScript(t, imaptestBuildLimit, abs, nil, "./build.sh")
	bin := strings.TrimSpace(lastLine(r.out))
	if r.err != nil || bin == "" {
		t.Fatalf("imaptest: build.sh failed (%v) after %v:\n%s", r.err, r.took.Round(time.Second), tailLines(r.out, 60))
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("imaptest: build.sh printed %q, which is not a file: %v\n%s", bin, err, tailLines(r.out, 60))
	}
	return abs, filepath.Join(filepath.Dir(bin), "tests")
}

// scriptRun is the outcome of one script.
type scriptRun struct {
	out  string // stdout and stderr, interleaved
	code int    // exit code, -1 when it did not exit normally
	err  error
	took time.Duration
}

// runScript runs name with args in dir with env added to the environment, bounded by limit (and by the test's
// deadline, minus a minute to report). The script and everything it started (imaptest) are one process group,
// killed together at the limit.
func runScript(t *testing.T, limit time.Duration, dir string, env []string, name string, args ...string) scriptRun {
	t.Helper()
	if dl, ok := t.Deadline(); ok && time.Until(dl)-time.Minute < limit {
		limit = max(time.Until(dl)-time.Minute, 10*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := scriptRun{out: out.String(), code: cmd.ProcessState.ExitCode(), err: err, took: time.Since(start)}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("%s %v: killed after %v (limit): %v", name, args, limit, err)
	}
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // nothing of it survives
	}
	return r
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return l[len(l)-1]
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = append([]string{fmt.Sprintf("[... %d lines before]", len(l)-n)}, l[len(l)-n:]...)
	}
	return strings.Join(l, "\n")
}

// imaptestWorld is a Vault with the imaptest user's key imported; Dovecots (each with only that user) and
// proxies in front of them are started from it.
type imaptestWorld struct {
	t          *testing.T
	v          *testenv.Vault
	vars       map[string]string
	user, pass string
}

func newImaptestWorld(t *testing.T) *imaptestWorld {
	t.Helper()
	user, pass := imaptestUser()
	iw := &imaptestWorld{t: t, user: user, pass: pass, v: testenv.StartVault(t)}
	iw.vars = map[string]string{"VAULT_ADDR": iw.v.Addr(), "VAULT_TOKEN": iw.v.RootToken(), "HOME": t.TempDir()}
	(&e2eWorld{t: t, v: iw.v, vars: iw.vars}).keys(user, imaptestKey+".key", imaptestKey+".pem")
	return iw
}

// dovecot starts a fresh Dovecot with only the imaptest user (allowed 200 sessions from 127.0.0.1: the proxy's
// upstream sessions and the stress clients all come from there).
func (iw *imaptestWorld) dovecot(t *testing.T) *testenv.Dovecot {
	t.Helper()
	return testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{iw.user: iw.pass},
		Extra: "protocol imap {\n  mail_max_userip_connections = 200\n}\n"})
}

// proxy starts 'smimeproxy serve' (decryption on, keys from Vault) in front of d, plaintext on 127.0.0.1, with
// /metrics on 127.0.0.1; it logs at info level (debug would hold every command of a stress run in memory).
// Appends are encrypted (the default): imaptest checks that what it appends reads back byte for byte, which
// the proxy guarantees by serving an encrypted append verbatim (decrypt/verbatim.go).
func (iw *imaptestWorld) proxy(t *testing.T, d *testenv.Dovecot) *serveProc {
	t.Helper()
	w := &e2eWorld{t: t, d: d, v: iw.v, vars: iw.vars}
	return w.serve("imaps://"+d.TLSAddr(), "--log-level", "info", "--metrics-listen", freeLoopback(t))
}

func (iw *imaptestWorld) env(extra ...string) []string {
	return append([]string{"IMAP_USER=" + iw.user, "IMAP_PASS=" + iw.pass}, extra...)
}

func addrPort(t *testing.T, addr string) string {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("no port in %q", addr)
	}
	return addr[i+1:]
}

// complianceRun is one parsed compliance.sh run.
type complianceRun struct {
	target   string
	status   map[string]string // group -> PASS, FAIL, SKIP, NORESULT
	groups   []string          // in run order
	passed   int
	failed   int
	skipped  int
	noResult int
	logs     string // directory of GROUP.log
	scriptRun
}

var (
	complianceGroupLine = regexp.MustCompile(`(?m)^(\S+)\s+(PASS|FAIL|SKIP|NORESULT)\s+failed base=`)
	complianceSummary   = regexp.MustCompile(`(?m)^imaptest: (\d+) passed, (\d+) failed, (\d+) skipped, (\d+) no result$`)
)

// runCompliance runs every compliance group against 127.0.0.1:port, logs in $OUT below a temporary directory.
func (iw *imaptestWorld) runCompliance(t *testing.T, dir, target, addr string) *complianceRun {
	t.Helper()
	logs := t.TempDir()
	r := runScript(t, imaptestComplianceLimit, dir, iw.env("OUT="+logs, "TMPDIR="+t.TempDir(),
		fmt.Sprintf("GROUP_TIMEOUT=%d", int(imaptestGroupTimeout.Seconds()))), "./compliance.sh", addrPort(t, addr))
	c := &complianceRun{target: target, status: map[string]string{}, logs: logs, scriptRun: r}
	m := complianceSummary.FindStringSubmatch(r.out)
	if m == nil || (r.code != 0 && r.code != 1) {
		t.Fatalf("compliance.sh against %s (%s): no summary line or unexpected exit (code %d, %v) after %v:\n%s",
			target, addr, r.code, r.err, r.took.Round(time.Second), tailLines(r.out, 80))
	}
	c.passed, _ = strconv.Atoi(m[1])
	c.failed, _ = strconv.Atoi(m[2])
	c.skipped, _ = strconv.Atoi(m[3])
	c.noResult, _ = strconv.Atoi(m[4])
	for _, g := range complianceGroupLine.FindAllStringSubmatch(r.out, -1) {
		c.status[g[1]] = g[2]
		c.groups = append(c.groups, g[1])
	}
	if n := c.passed + c.failed + c.skipped + c.noResult; n != len(c.groups) || n == 0 {
		t.Fatalf("compliance.sh against %s: summary counts %d groups, %d group lines parsed:\n%s", target, n,
			len(c.groups), tailLines(r.out, 80))
	}
	t.Logf("imaptest compliance, %s: %d passed, %d failed, %d skipped, %d no result (%d groups, %v)",
		target, c.passed, c.failed, c.skipped, c.noResult, len(c.groups), r.took.Round(100*time.Millisecond))
	return c
}

// excerpt returns about 40 lines of group's log from just before its first "*** Test" failure (the command
// sent, what was expected, what came back), else the log's last 40 lines (a hung or aborted group).
func (c *complianceRun) excerpt(group string) string {
	p := filepath.Join(c.logs, group+".log")
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Sprintf("    (no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	from := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "*** Test") {
			from = max(i-2, 0)
			break
		}
	}
	what := "from the first *** Test failure"
	if from < 0 {
		from, what = max(len(lines)-40, 0), "no *** Test line; the last lines"
	}
	to := min(from+40, len(lines))
	var sb strings.Builder
	fmt.Fprintf(&sb, "    %s, lines %d-%d of %d (%s):\n", p, from+1, to, len(lines), what)
	for _, l := range lines[from:to] {
		if len(l) > 400 {
			l = l[:400] + "..."
		}
		sb.WriteString("    | " + l + "\n")
	}
	return sb.String()
}

// TestImaptestCompliance runs imaptest's scripted protocol tests against a fresh Dovecot directly and through
// 'smimeproxy serve' (decryption on, the user's key in Vault) in front of another fresh Dovecot. Through the
// proxy the same groups must pass as directly, none may fail or hang, and only groups that Dovecot itself
// skips (a capability it lacks) may be skipped.
func TestImaptestCompliance(t *testing.T) {
	dir, tests := imaptestDir(t)
	iw := newImaptestWorld(t)

	dd := iw.dovecot(t)
	direct := iw.runCompliance(t, dir, "Dovecot direct", dd.Addr())
	if direct.failed > 0 || direct.noResult > 0 {
		var sb strings.Builder
		for _, g := range direct.groups {
			if st := direct.status[g]; st == "FAIL" || st == "NORESULT" {
				fmt.Fprintf(&sb, "%s: %s\n%s", g, st, direct.excerpt(g))
			}
		}
		t.Fatalf("imaptest against Dovecot directly: %d failed, %d no result: the environment is broken, not the "+
			"proxy (reference, Dovecot 2.3.19: 67 passed, 0 failed, 4 skipped, 0 no result)\n%s\n%s",
			direct.failed, direct.noResult, sb.String(), tailLines(direct.out, 80))
	}

	d := iw.dovecot(t)
	p := iw.proxy(t, d)
	proxied := iw.runCompliance(t, dir, "through smimeproxy", p.addr)

	all := map[string]bool{}
	for _, g := range append(append([]string{}, direct.groups...), proxied.groups...) {
		all[g] = true
	}
	var names []string
	for g := range all {
		names = append(names, g)
	}
	sort.Strings(names)
	var bad []string
	for _, g := range names {
		ds, ps := direct.status[g], proxied.status[g]
		// Direct has neither FAIL nor NORESULT (checked above): equal means both PASS or both SKIP.
		if ps != ds || ds == "" {
			bad = append(bad, g)
		}
	}
	t.Logf("wall time: direct %v, through the proxy %v", direct.took.Round(100*time.Millisecond),
		proxied.took.Round(100*time.Millisecond))
	if len(bad) == 0 {
		return
	}
	// What a group skipped through the proxy needs, and what the proxy does not advertise that Dovecot does.
	dcaps, derr := imapCapabilities(dd.Addr(), iw.user, iw.pass)
	pcaps, perr := imapCapabilities(p.addr, iw.user, iw.pass)
	missing := map[string]bool{}
	var missingList []string
	for _, c := range dcaps {
		if !slices.Contains(pcaps, c) {
			missing[c] = true
			missingList = append(missingList, c)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "imaptest through the proxy differs from Dovecot direct in %d groups: %s\n", len(bad), strings.Join(bad, " "))
	fmt.Fprintf(&sb, "direct:  %d passed, %d failed, %d skipped, %d no result\n", direct.passed, direct.failed, direct.skipped, direct.noResult)
	fmt.Fprintf(&sb, "proxied: %d passed, %d failed, %d skipped, %d no result\n", proxied.passed, proxied.failed, proxied.skipped, proxied.noResult)
	switch {
	case derr != nil || perr != nil:
		fmt.Fprintf(&sb, "capabilities after LOGIN: Dovecot: %v; proxy: %v\n\n", orErr(dcaps, derr), orErr(pcaps, perr))
	default:
		fmt.Fprintf(&sb, "capabilities after LOGIN that Dovecot advertises and the proxy does not: %s\n\n", orNone(strings.Join(missingList, " ")))
	}
	for _, g := range bad {
		fmt.Fprintf(&sb, "== %s: direct %s, through the proxy %s\n", g, orNotRun(direct.status[g]), orNotRun(proxied.status[g]))
		switch {
		case proxied.status[g] == "SKIP":
			need := groupCapabilities(tests, g)
			var lacks []string
			for _, c := range need {
				if missing[strings.ToUpper(c)] {
					lacks = append(lacks, c)
				}
			}
			fmt.Fprintf(&sb, "    no command run: the group needs %s; the proxy lacks %s\n", orNone(strings.Join(need, " ")),
				orNone(strings.Join(lacks, " ")))
		case proxied.status[g] != "":
			sb.WriteString(proxied.excerpt(g))
		}
		sb.WriteString("\n")
	}
	t.Errorf("%s", sb.String())
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func orNotRun(s string) string {
	if s == "" {
		return "(not run)"
	}
	return s
}

func orErr(caps []string, err error) string {
	if err != nil {
		return err.Error()
	}
	return strings.Join(caps, " ")
}

// groupCapabilities returns the capabilities a compliance group's script needs (its "capabilities:" header
// line); imaptest skips the group when the server lacks one.
func groupCapabilities(tests, group string) []string {
	b, err := os.ReadFile(filepath.Join(tests, group))
	if err != nil {
		return []string{"(" + err.Error() + ")"}
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" {
			break // end of the header
		}
		if v, ok := strings.CutPrefix(l, "capabilities:"); ok {
			return strings.Fields(v)
		}
	}
	return nil
}

// imapCapabilities logs in to the IMAP server at addr (plaintext) and returns its CAPABILITY list after
// LOGIN, upper-cased; each step is bounded.
func imapCapabilities(addr, user, pass string) ([]string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		return nil, fmt.Errorf("greeting %q: %v", l, err)
	}
	var caps []string
	for _, cmd := range []string{fmt.Sprintf("a LOGIN %q %q", user, pass), "b CAPABILITY"} {
		if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
			return nil, err
		}
		tag := cmd[:2]
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return nil, fmt.Errorf("%s: %v", strings.Fields(cmd)[1], err)
			}
			l = strings.TrimRight(l, "\r\n")
			if v, ok := strings.CutPrefix(l, "* CAPABILITY "); ok {
				caps = strings.Fields(strings.ToUpper(v))
			}
			if strings.HasPrefix(l, tag) {
				if !strings.HasPrefix(l, tag+"OK") {
					return nil, fmt.Errorf("%s: %s", strings.Fields(cmd)[1], l)
				}
				break
			}
		}
	}
	return caps, nil
}

var stressSummary = regexp.MustCompile(`(?m)^stress: (\d+) errors`)

// TestImaptestStress runs imaptest's randomized multi-client stress (selects, fetches, stores, appends from
// an mbox, expunges on one INBOX, every response checked against its model of the mailbox) through the proxy
// against a fresh Dovecot, with plain mail and with mail half of which is S/MIME-encrypted to the user's key;
// it must find no error, and the S/MIME run must have had messages decrypted. 5 clients for 30 s each;
// SMIMEPROXY_STRESS_FULL=1 adds 20-client runs.
func TestImaptestStress(t *testing.T) {
	dir, _ := imaptestDir(t)
	iw := newImaptestWorld(t)
	mboxes := t.TempDir()
	r := runScript(t, 2*time.Minute, dir, nil, "python3", "./gen-mbox.py", mboxes, mustAbs(t, imaptestKey+".pem"))
	if r.err != nil {
		t.Fatalf("gen-mbox.py: %v\n%s", r.err, tailLines(r.out, 40))
	}
	for _, f := range []string{"plain.mbox", "smime.mbox"} {
		if st, err := os.Stat(filepath.Join(mboxes, f)); err != nil || st.Size() == 0 {
			t.Fatalf("gen-mbox.py did not write %s (%v):\n%s", f, err, r.out)
		}
	}
	clients := []int{5}
	if os.Getenv("SMIMEPROXY_STRESS_FULL") == "1" {
		clients = append(clients, 20)
	}
	for _, n := range clients {
		for _, mbox := range []string{"plain", "smime"} {
			t.Run(fmt.Sprintf("%s-%d", mbox, n), func(t *testing.T) {
				d := iw.dovecot(t)
				p := iw.proxy(t, d)
				decrypted := func() float64 {
					return metricValue(t, httpGet(t, "http://"+p.metrics+"/metrics"), "smimeproxy_messages_decrypted_total")
				}
				before := decrypted()
				tmp := t.TempDir()
				r := runScript(t, time.Duration(imaptestStressSecs+120)*time.Second, dir, iw.env("TMPDIR="+tmp),
					"./stress.sh", addrPort(t, p.addr), filepath.Join(mboxes, mbox+".mbox"), strconv.Itoa(n), strconv.Itoa(imaptestStressSecs))
				m := stressSummary.FindStringSubmatch(r.out)
				errs := -1
				if m != nil {
					errs, _ = strconv.Atoi(m[1])
				}
				t.Logf("imaptest stress through the proxy, %s.mbox, %d clients, %d s: %d errors (exit %d, %v)",
					mbox, n, imaptestStressSecs, errs, r.code, r.took.Round(100*time.Millisecond))
				if m == nil || errs != 0 || r.code != 0 {
					t.Errorf("stress.sh through the proxy, %s.mbox, %d clients: %d errors (exit %d, %v), want 0:\n%s\n%s",
						mbox, n, errs, r.code, r.err, tailLines(r.out, 40), stressLogExcerpt(tmp))
				}
				if mbox == "smime" {
					after := decrypted()
					t.Logf("smimeproxy_messages_decrypted_total: %v before, %v after", before, after)
					if after <= before {
						t.Errorf("smimeproxy_messages_decrypted_total = %v before and %v after the S/MIME stress run: "+
							"no encrypted message was decrypted", before, after)
					}
				}
			})
		}
	}
}

// stressLogExcerpt returns the first 30 error lines of the stress log (stress.sh writes it to $TMPDIR) with
// their real numbers (stress.sh's summary groups them with the numbers masked).
func stressLogExcerpt(tmp string) string {
	logs, _ := filepath.Glob(filepath.Join(tmp, "imaptest-stress.*"))
	if len(logs) == 0 {
		return "(no stress log)"
	}
	f, err := os.Open(logs[0])
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var sb strings.Builder
	n, total := 0, 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "Error") && !strings.HasPrefix(l, "Panic") && !strings.HasPrefix(l, "Fatal") {
			continue
		}
		total++
		if n < 30 {
			if len(l) > 300 {
				l = l[:300] + "..."
			}
			sb.WriteString("    | " + l + "\n")
			n++
		}
	}
	if total == 0 {
		return fmt.Sprintf("stress log %s has no error line; its end:\n%s", logs[0], tailFile(logs[0], 20))
	}
	return fmt.Sprintf("stress log %s, error lines 1-%d of %d:\n%s", logs[0], n, total, sb.String())
}

func tailFile(p string, n int) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	return tailLines(string(b), n)
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
