package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Vault is a real HashiCorp Vault dev server (in-memory storage, unsealed, root token) started for one test,
// reached through a loopback TCP relay that the test can cut (Stop) and restore (Restart) without losing
// Vault's data. Tests talk to Addr; the relay adds no other behaviour.
type Vault struct {
	t      TB
	cmd    *exec.Cmd
	token  string
	direct string // Vault's own listener, host:port
	relay  *Relay
	home   string
	scheme string       // http, or https with StartVaultTLS
	caCert string       // PEM file of the dev TLS CA (StartVaultTLS)
	hc     *http.Client // trusts caCert
}

// vaultStartTimeout bounds waiting for the dev server to report healthy (it takes ~0.2 s on an idle machine;
// the margin is for a loaded 2-core CI box).
const vaultStartTimeout = 60 * time.Second

// VaultBin returns the Vault server binary: $SMIMEPROXY_VAULT_BIN, else the cache path scripts/build-vault.sh
// builds into. In the fast tier it skips the test (RequireIntegration); in the integration tier it fails the
// test, saying how to build the binary, when there is none.
func VaultBin(t TB) string {
	t.Helper()
	RequireIntegration(t, "the Vault dev server")
	if bin := os.Getenv("SMIMEPROXY_VAULT_BIN"); bin != "" {
		if st, err := os.Stat(bin); err != nil || st.IsDir() {
			t.Fatalf("testenv: SMIMEPROXY_VAULT_BIN=%s is not a file: run scripts/build-vault.sh", bin)
		}
		return bin
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	bin, err := vaultCachePath(root)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("testenv: no Vault server binary at %s: run scripts/build-vault.sh (cold build ~10 min) or set SMIMEPROXY_VAULT_BIN", bin)
	}
	return bin
}

// vaultCachePath mirrors scripts/build-vault.sh: the cache directory is keyed by the first 16 hex digits of
// SHA-256(go.mod || go.sum || main.go) of tools/vault.
func vaultCachePath(root string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(root, "tools", "vault", f))
		if err != nil {
			return "", fmt.Errorf("reading the Vault build module: %w", err)
		}
		h.Write(b)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	cache := os.Getenv("SMIMEPROXY_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("no cache directory: %w", err)
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "smimeproxy")
	}
	return filepath.Join(cache, "vault-"+sum, "vault"), nil
}

// repoRoot finds the module root (the directory with tools/vault) from the working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 20 {
		if _, err := os.Stat(filepath.Join(dir, "tools", "vault", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("cannot find the repository root (with tools/vault) above the working directory")
}

// StartVault starts a Vault dev server on a free 127.0.0.1 port with a random root token, waits until it is
// healthy, and enables the Transit engine at transit/ (the dev server already has KV v2 at secret/). The server
// is killed (by PID) when the test ends. In the fast tier it skips the test (RequireIntegration); in the
// integration tier it fails the test when the binary is missing or the server does not come up.
func StartVault(t TB) *Vault {
	t.Helper()
	return startVault(t, false)
}

// StartVaultTLS is StartVault with Vault's dev TLS mode: Vault serves HTTPS with a certificate (valid for
// 127.0.0.1) from a generated CA whose PEM file is CACert.
func StartVaultTLS(t TB) *Vault {
	t.Helper()
	return startVault(t, true)
}

func startVault(t TB, useTLS bool) *Vault {
	t.Helper()
	bin := VaultBin(t)
	port, err := freePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	v := &Vault{t: t, token: "root-" + hex.EncodeToString(tok), direct: fmt.Sprintf("127.0.0.1:%d", port), home: t.TempDir()}
	logPath := filepath.Join(v.home, "vault.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	args := []string{"server", "-dev", "-dev-listen-address=" + v.direct, "-dev-root-token-id=" + v.token, "-dev-no-store-token"}
	v.scheme, v.hc = "http", &http.Client{Timeout: 30 * time.Second}
	if useTLS {
		certDir := filepath.Join(v.home, "tls")
		if err := os.Mkdir(certDir, 0o700); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+certDir)
		v.scheme, v.caCert = "https", filepath.Join(certDir, "vault-ca.pem")
	}
	v.cmd = exec.Command(bin, args...)
	// HOME in a temp dir: the dev server must not touch the real ~/.vault-token.
	v.cmd.Env = append(cleanEnv(), "HOME="+v.home, "VAULT_DISABLE_MLOCK=true")
	v.cmd.Dir = v.home
	v.cmd.Stdout, v.cmd.Stderr = logf, logf
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := v.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("testenv: starting %s: %v", bin, err)
	}
	pid := v.cmd.Process.Pid
	exited := make(chan struct{})
	go func() { v.cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("testenv: vault (pid %d) did not exit after SIGKILL", pid)
		}
	})
	if err := v.waitHealthy(exited); err != nil {
		t.Fatalf("testenv: vault dev server (pid %d) not healthy: %v\n%s", pid, err, tail(logPath, 20))
	}
	v.relay = NewRelay(t, v.direct)
	if _, err := v.Request("POST", "sys/mounts/transit", `{"type":"transit"}`); err != nil {
		t.Fatalf("testenv: enabling transit: %v", err)
	}
	return v
}

// cleanEnv is the process environment without VAULT_* variables, so the caller's Vault settings cannot leak
// into the dev server.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitHealthy polls GET /v1/sys/health until it answers 200 (initialized, unsealed, active), the process exits,
// or vaultStartTimeout passes. In TLS mode it first waits for the CA file.
func (v *Vault) waitHealthy(exited <-chan struct{}) error {
	deadline := time.Now().Add(vaultStartTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("the process exited")
		default:
		}
		if v.caCert != "" && v.hc.Transport == nil {
			pem, err := os.ReadFile(v.caCert)
			pool := x509.NewCertPool()
			if err != nil || !pool.AppendCertsFromPEM(pem) {
				last = fmt.Errorf("no CA file yet: %v", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			v.hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", v.scheme+"://"+v.direct+"/v1/sys/health", nil)
		resp, err := v.hc.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Errorf("health status %d", resp.StatusCode)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not healthy after %v: %v", vaultStartTimeout, last)
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// Addr is the URL tests and code under test use (through the relay), e.g. http://127.0.0.1:41234.
func (v *Vault) Addr() string { return v.scheme + "://" + v.relay.Addr() }

// CACert is the PEM file of the CA of Vault's TLS certificate (StartVaultTLS), else "".
func (v *Vault) CACert() string { return v.caCert }

// RootToken is the dev server's root token.
func (v *Vault) RootToken() string { return v.token }

// PID is the Vault server's process id.
func (v *Vault) PID() int { return v.cmd.Process.Pid }

// Stop makes Vault unreachable at Addr: the relay closes its listener (new connections are refused) and cuts
// open connections. Vault itself keeps running with its data.
func (v *Vault) Stop() { v.relay.Stop() }

// Restart makes Vault reachable at Addr again after Stop.
func (v *Vault) Restart() {
	v.t.Helper()
	if err := v.relay.Restart(); err != nil {
		v.t.Fatalf("testenv: restarting the vault relay: %v", err)
	}
}

// Request makes a root-token API call straight to Vault (path without /v1/), e.g. to set up policies or
// AppRole, and returns the response body. Non-2xx answers are errors.
func (v *Vault) Request(method, path, jsonBody string) ([]byte, error) {
	var body io.Reader
	if jsonBody != "" {
		body = strings.NewReader(jsonBody)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, v.scheme+"://"+v.direct+"/v1/"+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Vault-Token", v.token)
	if jsonBody != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := v.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return b, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// MustRequest is Request that fails the test on error.
func (v *Vault) MustRequest(method, path, jsonBody string) []byte {
	v.t.Helper()
	b, err := v.Request(method, path, jsonBody)
	if err != nil {
		v.t.Fatalf("testenv: vault %v", err)
	}
	return b
}
