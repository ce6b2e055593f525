package main

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// lockedBuffer is a bytes.Buffer safe to read while a running command writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func demoEnv(vars map[string]string) (*cmdEnv, *lockedBuffer, *lockedBuffer) {
	out, errb := &lockedBuffer{}, &lockedBuffer{}
	return &cmdEnv{stdin: strings.NewReader(""), stdout: out, stderr: errb, getenv: func(k string) string { return vars[k] }}, out, errb
}

func TestDemoOnce(t *testing.T) {
	env, out, errb := demoEnv(map[string]string{"HOME": t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code := runMain(ctx, env, []string{"demo", "--once", "--listen", "127.0.0.1:0", "--submission-listen", "127.0.0.1:0"}); code != exitOK {
		t.Fatalf("demo --once = %d\nstdout: %s\nstderr: %s", code, out, errb)
	}
	if !strings.Contains(out.String(), "demo check passed") || !strings.Contains(out.String(), "read back decrypted, signature valid") {
		t.Errorf("stdout = %q", out)
	}
}

var curlLine = regexp.MustCompile(`curl --user demo:demo '(imap://127\.0\.0\.1:\d+/INBOX;UID=1)'`)

// TestDemoRunsUntilCancelled runs the demo as a person would: start it, copy the printed curl command, read
// decrypted mail, stop it (the context stands for Ctrl-C).
func TestDemoRunsUntilCancelled(t *testing.T) {
	env, out, errb := demoEnv(map[string]string{"HOME": t.TempDir()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- runMain(ctx, env, []string{"demo", "--listen", "127.0.0.1:0", "--submission-listen", "127.0.0.1:0"})
	}()

	var url string
	deadline := time.Now().Add(time.Minute)
	for url == "" {
		if m := curlLine.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("demo exited with %d before printing instructions\nstdout: %s\nstderr: %s", code, out, errb)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no curl line printed:\n%s", out)
		}
	}
	for _, want := range []string{"python3 -c \"import imaplib", "Thunderbird", "X-Smimeproxy-Status", "curl --silent --show-error --url smtp://127.0.0.1:",
		"python3 -c \"import smtplib"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("instructions lack %q", want)
		}
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	got, err := exec.CommandContext(cctx, testenv.LookPath(t, "curl"), "--silent", "--show-error", "--max-time", "20", "--user", "demo:demo", url).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, got)
	}
	if !bytes.Contains(got, []byte("X-Smimeproxy-Status: decrypted")) || !bytes.Contains(got, []byte("S/MIME encrypted upstream")) {
		t.Errorf("curl did not get the decrypted message:\n%s", got)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("demo exit code %d after Ctrl-C\nstderr: %s", code, errb)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop after its context ended")
	}
}

// TestDemoVault puts the demo key into a real Vault dev server.
func TestDemoVault(t *testing.T) {
	v := testenv.StartVault(t)
	vars := map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": v.RootToken(), "HOME": t.TempDir()}
	env, out, errb := demoEnv(vars)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code := runMain(ctx, env, []string{"demo", "--vault", "--once", "--listen", "127.0.0.1:0", "--submission-listen", "127.0.0.1:0"}); code != exitOK {
		t.Fatalf("demo --vault --once = %d\nstdout: %s\nstderr: %s", code, out, errb)
	}
	env, out, errb = demoEnv(vars)
	if code := runMain(ctx, env, []string{"keys", "list", "--user", "demo"}); code != exitOK {
		t.Fatalf("keys list = %d: %s", code, errb)
	}
	if !strings.Contains(out.String(), "demo@example.com") {
		t.Errorf("the demo key is not in Vault: keys list printed %q", out)
	}
	if strings.Contains(out.String()+errb.String(), v.RootToken()) {
		t.Error("output contains the Vault token")
	}
}

func TestDemoFlags(t *testing.T) {
	env, _, errb := demoEnv(nil)
	if code := runMain(context.Background(), env, []string{"demo", "--listen", "0.0.0.0:1143", "--once"}); code != exitError {
		t.Errorf("non-loopback listen: exit %d, want %d", code, exitError)
	}
	if !strings.Contains(errb.String(), "loopback") {
		t.Errorf("stderr = %q, want a loopback explanation", errb)
	}
	env, _, errb = demoEnv(nil)
	if code := runMain(context.Background(), env, []string{"demo", "--listen", "127.0.0.1:0", "--submission-listen", "0.0.0.0:1587", "--once"}); code != exitError {
		t.Errorf("non-loopback submission listen: exit %d, want %d", code, exitError)
	}
	if !strings.Contains(errb.String(), "loopback") {
		t.Errorf("stderr = %q, want a loopback explanation", errb)
	}
	env, _, _ = demoEnv(nil)
	if code := runMain(context.Background(), env, []string{"demo", "extra"}); code != exitError {
		t.Errorf("extra argument: exit %d, want %d", code, exitError)
	}
}
