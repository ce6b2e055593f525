package testenv

import (
	"bytes"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

var (
	_ TB = (*testing.T)(nil)
	_ TB = (*testing.B)(nil)
	_ TB = (*Program)(nil)
)

// TestProgramFatalf: Fatalf stops Run's function, prints its message and runs the cleanups last first; Run
// reports ErrFailed.
func TestProgramFatalf(t *testing.T) {
	var log bytes.Buffer
	p := NewProgram(&log)
	var order []int
	var dir string
	reached := false
	err := p.Run(func() {
		p.Cleanup(func() { order = append(order, 1) })
		p.Cleanup(func() { order = append(order, 2) })
		dir = p.TempDir()
		p.Fatalf("boom %d", 7)
		reached = true
	})
	if !errors.Is(err, ErrFailed) || reached {
		t.Fatalf("Run() = %v, code after Fatalf reached: %v", err, reached)
	}
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Errorf("cleanups ran in order %v, want [2 1]", order)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("TempDir %s survived: %v", dir, err)
	}
	if log.String() != "boom 7\n" {
		t.Errorf("log = %q", log.String())
	}
	if err := NewProgram(&log).Run(func() {}); err != nil {
		t.Errorf("Run(no-op) = %v", err)
	}
}

// TestProgramDovecot starts a real Dovecot through a Program: it greets while Run's function runs and is gone
// afterwards. (A Program never skips, so the tier is checked on t.)
func TestProgramDovecot(t *testing.T) {
	RequireIntegration(t, "Dovecot")
	var log bytes.Buffer
	p := NewProgram(&log)
	var addr string
	err := p.Run(func() {
		d := StartDovecot(p, DovecotOptions{NoTLS: true})
		addr = d.Addr()
		c := d.Dial("alice")
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			p.Fatalf("select: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("Run() = %v\n%s", err, log.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("dovecot still listens on %s after Run", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(log.String(), "testenv:") {
		t.Errorf("unexpected log: %s", log.String())
	}
}

// TestProgramRunCleanupsWaits: a second RunCleanups (Run returning while a signal handler cleans up) returns
// only once the first has finished.
func TestProgramRunCleanupsWaits(t *testing.T) {
	p := NewProgram(&bytes.Buffer{})
	started, release := make(chan struct{}), make(chan struct{})
	p.Cleanup(func() { close(started); <-release })
	go p.RunCleanups()
	<-started
	second := make(chan struct{})
	go func() { p.RunCleanups(); close(second) }()
	select {
	case <-second:
		t.Fatal("second RunCleanups returned while the first was still running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("second RunCleanups did not return")
	}
	ran := false
	p.Cleanup(func() { ran = true })
	if !ran {
		t.Error("Cleanup after the cleanups did not run at once")
	}
}
