package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// childStartTimeout bounds waiting for the smimeproxy child to greet (a cold `go build` is done before).
const childStartTimeout = 60 * time.Second

// rssResult is the memory of a `smimeproxy serve` child around one fetch of the big message.
type rssResult struct {
	baseRSS, baseHWM int64 // VmRSS and VmHWM (bytes) after login and EXAMINE, before the fetch
	peak             int64 // VmHWM after the fetch
	msgSize          int64 // the encrypted message's size upstream
	served           int64 // bytes of the served (decrypted) literal
}

// procStatus reads VmRSS and VmHWM of pid from /proc/pid/status (proc(5)), in bytes.
func procStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("smimebench: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[2] != "kB" {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("smimebench: no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}

// measureRSS builds ./cmd/smimeproxy (unless serveBin names a binary) and imports the key into Vault with `smimeproxy keys import`; then, times
// times, it runs `smimeproxy serve` as a fresh child on a free loopback port (Vault from the environment, the
// default decrypt cache), fetches the big encrypted message once through it (BODY.PEEK[] streamed and hashed,
// not kept) and reads the child's VmHWM. The served message must be decrypted with the plain twin's body. It
// returns the run with the median peak.
func measureRSS(ctx context.Context, tb testenv.TB, dir string, dovecotAddr string, v *testenv.Vault, id *identity, big twin, extraEnv []string, times int, logDir, serveBin string) (rssResult, error) {
	bin := serveBin
	if bin == "" {
		bin = filepath.Join(dir, "smimeproxy")
		progress("rss: go build ./cmd/smimeproxy")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/smimeproxy/smimeproxy/cmd/smimeproxy").CombinedOutput()
		if err != nil {
			return rssResult{}, fmt.Errorf("smimebench: go build ./cmd/smimeproxy (run within the repository): %v\n%s", err, out)
		}
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return rssResult{}, fmt.Errorf("smimebench: %w", err)
	}
	// The child sees only Vault's address and token, and a home without config files.
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CONFIG_HOME=" + home,
		"VAULT_ADDR=" + v.Addr(), "VAULT_TOKEN=" + v.RootToken()}
	keyFile, certFile := filepath.Join(dir, "rss-key.pem"), filepath.Join(dir, "rss-cert.pem")
	if err := os.WriteFile(keyFile, id.keyPEM(), 0o600); err != nil {
		return rssResult{}, fmt.Errorf("smimebench: %w", err)
	}
	if err := os.WriteFile(certFile, id.certPEM(), 0o600); err != nil {
		return rssResult{}, fmt.Errorf("smimebench: %w", err)
	}
	imp := exec.CommandContext(ctx, bin, "keys", "import", "--user", benchUser, keyFile, certFile)
	imp.Env = env
	if out, err := imp.CombinedOutput(); err != nil {
		return rssResult{}, fmt.Errorf("smimebench: smimeproxy keys import: %v\n%s", err, out)
	}
	var runs []rssResult
	for i := range times {
		r, err := rssOnce(tb, cmpOr(logDir, dir), bin, append(env, extraEnv...), dovecotAddr, big, i)
		if err != nil {
			return r, err
		}
		progress("rss: run %d/%d: VmHWM %s after the fetch (%.2fx)", i+1, times, mb(r.peak), float64(r.peak)/float64(r.msgSize))
		runs = append(runs, r)
	}
	slices.SortFunc(runs, func(a, b rssResult) int { return int(a.peak - b.peak) })
	return runs[len(runs)/2], nil
}

// rssOnce runs one serve child and fetches the big message once through it.
func rssOnce(tb testenv.TB, logDir, bin string, env []string, dovecotAddr string, big twin, run int) (rssResult, error) {

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return rssResult{}, fmt.Errorf("smimebench: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(logDir, fmt.Sprintf("serve%d.log", run))
	logf, err := os.Create(logPath)
	if err != nil {
		return rssResult{}, fmt.Errorf("smimebench: %w", err)
	}
	defer logf.Close()
	// The metadata store as deployed (on), in the run's own directory rather than the user's ~/.cache.
	child := exec.Command(bin, "serve", "--listen", addr, "--upstream", "imap://"+dovecotAddr,
		"--metadata-store", filepath.Join(logDir, fmt.Sprintf("metadata%d", run)))
	child.Env = env
	child.Stdout, child.Stderr = logf, logf
	child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	progress("rss: starting smimeproxy serve --listen %s --upstream imap://%s", addr, dovecotAddr)
	if err := child.Start(); err != nil {
		return rssResult{}, fmt.Errorf("smimebench: starting smimeproxy serve: %w", err)
	}
	pid := child.Process.Pid
	exited := make(chan struct{})
	go func() { child.Wait(); close(exited) }()
	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pid, syscall.SIGKILL)
			<-exited
		}
	}
	tb.Cleanup(stop)
	defer stop()
	serveLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	if err := waitGreeting(addr, exited); err != nil {
		return rssResult{}, fmt.Errorf("%w\nsmimeproxy serve log:\n%s", err, serveLog())
	}

	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return rssResult{}, fmt.Errorf("smimebench: dial the child proxy: %w", err)
	}
	defer c.Close()
	if err := c.Login(benchUser, benchPassword).Wait(); err != nil {
		return rssResult{}, fmt.Errorf("smimebench: login through the child proxy: %w\n%s", err, serveLog())
	}
	if _, err := c.Select(bigMailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		return rssResult{}, fmt.Errorf("smimebench: examine %s through the child proxy: %w", bigMailbox, err)
	}
	var r rssResult
	r.msgSize = int64(len(big.enc))
	if r.baseRSS, r.baseHWM, err = procStatus(pid); err != nil {
		return r, err
	}
	progress("rss: child pid %d: VmRSS %s, VmHWM %s before the fetch; fetching the %s message", pid,
		mb(r.baseRSS), mb(r.baseHWM), mb(r.msgSize))
	sec := &imap.FetchItemBodySection{Peek: true}
	cmd := c.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}})
	var verr error
	for m := cmd.Next(); m != nil; m = cmd.Next() {
		for item := m.Next(); item != nil; item = m.Next() {
			if bs, ok := item.(imapclient.FetchItemDataBodySection); ok && bs.Literal != nil {
				r.served += bs.Literal.Size()
				verr = keepFirst(verr, checkStreamed(bs.Literal, big.body))
			}
		}
	}
	if err := cmd.Close(); err != nil {
		return r, fmt.Errorf("smimebench: fetching the big message through the child proxy: %w\n%s", err, serveLog())
	}
	if verr != nil {
		return r, verr
	}
	if r.served == 0 {
		return r, errors.New("smimebench: the child proxy served no big message")
	}
	if _, r.peak, err = procStatus(pid); err != nil {
		return r, err
	}
	return r, nil
}

// checkStreamed reads a served message without keeping it: the status field must say decrypted and the body's
// SHA-256 must be the plain twin's.
func checkStreamed(r io.Reader, wantBody []byte) error {
	br := bufio.NewReaderSize(r, 64<<10)
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("smimebench: big message: reading its header: %w", err)
		}
		if first && !bytes.HasPrefix(line, decryptedPrefix) {
			io.Copy(io.Discard, br)
			return fmt.Errorf("smimebench: big message not served decrypted: %.200q", line)
		}
		first = false
		if string(line) == "\r\n" {
			break
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, br); err != nil {
		return fmt.Errorf("smimebench: big message: %w", err)
	}
	if want := sha256.Sum256(wantBody); !bytes.Equal(h.Sum(nil), want[:]) {
		return errors.New("smimebench: big message: decrypted body differs from its plain twin's")
	}
	return nil
}

// waitGreeting waits (bounded) until addr sends an IMAP greeting.
func waitGreeting(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(childStartTimeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if strings.HasPrefix(line, "* OK") {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("smimebench: smimeproxy serve exited at start")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("smimebench: smimeproxy serve did not greet on %s within %v", addr, childStartTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
