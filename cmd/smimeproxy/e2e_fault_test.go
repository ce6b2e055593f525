package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cutRelay forwards TCP connections to target; once armed, it cuts every connection after limit more bytes
// have flowed from target to the client side (fault injection: the upstream drops mid-literal).
type cutRelay struct {
	ln     net.Listener
	target string
	limit  int64
	armed  atomic.Bool
	sent   atomic.Int64
	cut    atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newCutRelay(t *testing.T, target string, limit int64) *cutRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &cutRelay{ln: ln, target: target, limit: limit}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.pipe(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.closeAll()
		r.wg.Wait()
	})
	return r
}

func (r *cutRelay) addr() string { return r.ln.Addr().String() }

func (r *cutRelay) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
}

func (r *cutRelay) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	r.mu.Lock()
	r.conns = append(r.conns, c, up)
	r.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.Close(); done <- struct{}{} }()
	go func() {
		buf := make([]byte, 16<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				if r.armed.Load() && r.sent.Add(int64(n)) > r.limit {
					r.cut.Store(true)
					r.closeAll()
					break
				}
				if _, werr := c.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		c.Close()
		done <- struct{}{}
	}()
	<-done
	<-done
}

// TestE2EUpstreamDrop: the upstream connection breaks in the middle of the ciphertext literal of a large
// encrypted message the proxy is reading to decrypt. The client gets BYE and no byte of plaintext, the
// connection closes, and the proxy's goroutines return to their number before the session.
func TestE2EUpstreamDrop(t *testing.T) {
	w := newE2EWorld(t)
	var pt bytes.Buffer
	pt.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
	for i := 0; pt.Len() < 3<<20; i++ {
		fmt.Fprintf(&pt, "LEAKCHECK line %06d of the secret report on numbat-11\r\n", i)
	}
	large := p7mMessage(e2eOuter, envelopeTo(t, pt.Bytes(), cmsKeys+"rsa.pem", "aes-256-cbc"), "enveloped-data")
	small := p7mMessage(e2eOuter, readFile(t, cmsFixtures+"rsa-v15-aes128-cbc.der"), "enveloped-data")
	w.d.Append("bob", "INBOX", small, nil, time.Time{})
	largeUID := w.d.Append("bob", "INBOX", large, nil, time.Time{})

	relay := newCutRelay(t, w.d.TLSAddr(), 512<<10)
	p := w.serve("imaps://" + relay.addr())

	// Warm up: one session decrypts the small message, so Vault's keep-alive connection and cached keys exist
	// before the baseline is taken.
	res := runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1", "(BODY.PEEK[])")})
	if b := res[1].literal(t); status(b) != "decrypted" {
		t.Fatalf("warm-up: %q", statusFields(b))
	}
	time.Sleep(200 * time.Millisecond)
	base := runtime.NumGoroutine()

	conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(conn)
	readUntil := func(prefix string) string {
		t.Helper()
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %q: %v", prefix, err)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		}
	}
	readUntil("* OK")
	fmt.Fprintf(conn, "a LOGIN bob bob-pw\r\n")
	readUntil("a OK")
	fmt.Fprintf(conn, "b SELECT INBOX\r\n")
	readUntil("b OK")
	relay.armed.Store(true)
	fmt.Fprintf(conn, "c UID FETCH %d (RFC822.SIZE BODY.PEEK[])\r\n", largeUID)
	rest, err := io.ReadAll(br) // until the proxy closes the connection
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading after the cut: %v (got %q)", err, rest)
	}
	if !relay.cut.Load() {
		t.Fatal("the relay never cut the upstream connection")
	}
	if !bytes.Contains(rest, []byte("* BYE")) {
		t.Errorf("after the upstream dropped: %.500q (read error %v), want * BYE", rest, err)
	}
	if bytes.Contains(rest, []byte("c OK")) {
		t.Errorf("FETCH completed OK though the upstream dropped: %.500q", rest)
	}
	if bytes.Contains(rest, []byte("LEAKCHECK")) || bytes.Contains(rest, []byte("numbat-11")) {
		t.Error("plaintext of the cut message reached the client")
	}
	conn.Close()
	deadline := time.Now().Add(15 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The proxy still serves new sessions through the (re-opened) upstream path.
	relay.armed.Store(false)
	res = runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1", "(BODY.PEEK[])")})
	if len(res) != 2 || status(res[1].literal(t)) != "decrypted" {
		t.Errorf("after the drop, a new session: %+v", res)
	}
	p.stop()
	if logs := p.stderr.String(); strings.Contains(logs, "LEAKCHECK") || strings.Contains(logs, "numbat-11") {
		t.Error("serve log holds plaintext of the cut message")
	}
	w.checkSecrets("serve log", p.stderr.String())
}
