package testenv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// TB is the part of testing.TB that testenv uses, so that a plain program (the benchmark command) can start
// the same servers through Program. *testing.T and *testing.B satisfy it.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Failed() bool
	Cleanup(func())
	TempDir() string
}

// Program is a TB for a program outside "go test". Fatalf and Errorf print to its log writer; Fatalf then
// stops the function given to Run, which runs the cleanups (last registered first) and reports the failure.
// Like testing.T.FailNow, Fatalf must be called on the goroutine running Run's function.
type Program struct {
	log io.Writer

	mu       sync.Mutex
	failed   bool
	cleanups []func()
	cleaned  bool
	done     chan struct{} // closed when the cleanups have run
}

// ErrFailed is returned by Program.Run when Errorf or Fatalf was called.
var ErrFailed = errors.New("testenv: failed")

// fatal is the panic value by which Fatalf unwinds to Run.
type fatal struct{}

// NewProgram returns a Program that logs to log (os.Stderr when nil).
func NewProgram(log io.Writer) *Program {
	if log == nil {
		log = os.Stderr
	}
	return &Program{log: log}
}

// Run calls f, then runs the cleanups. It returns ErrFailed when f (or a cleanup) called Errorf or Fatalf. A
// panic other than Fatalf's runs the cleanups and continues panicking.
func (p *Program) Run(f func()) (err error) {
	defer func() {
		r := recover()
		p.RunCleanups()
		if _, ok := r.(fatal); r != nil && !ok {
			panic(r)
		}
		if p.Failed() {
			err = ErrFailed
		}
	}()
	f()
	return nil
}

// RunCleanups runs the registered cleanups once, last registered first. Run calls it; a signal handler may too.
// A concurrent caller waits until the first one has finished, so that Run does not return (and the program
// exit) while a signal handler is still stopping servers.
func (p *Program) RunCleanups() {
	p.mu.Lock()
	if p.cleaned {
		done := p.done
		p.mu.Unlock()
		<-done
		return
	}
	p.cleaned = true
	p.done = make(chan struct{})
	defer close(p.done)
	fns := p.cleanups
	p.cleanups = nil
	p.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// Helper does nothing (there is no call-site reporting outside tests).
func (p *Program) Helper() {}

// Logf prints a line to the log writer.
func (p *Program) Logf(format string, args ...any) { fmt.Fprintf(p.log, format+"\n", args...) }

// Errorf prints a line and marks the program failed.
func (p *Program) Errorf(format string, args ...any) {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	p.Logf(format, args...)
}

// Fatalf is Errorf followed by unwinding to Run.
func (p *Program) Fatalf(format string, args ...any) {
	p.Errorf(format, args...)
	panic(fatal{})
}

// Failed reports whether Errorf or Fatalf was called.
func (p *Program) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// Cleanup registers f to run when Run returns. After the cleanups ran, f runs at once.
func (p *Program) Cleanup(f func()) {
	p.mu.Lock()
	if p.cleaned {
		p.mu.Unlock()
		f()
		return
	}
	p.cleanups = append(p.cleanups, f)
	p.mu.Unlock()
}

// TempDir returns a new temporary directory, removed by the cleanups. It calls Fatalf when none can be made.
func (p *Program) TempDir() string {
	dir, err := os.MkdirTemp("", "smimeproxy-testenv-")
	if err != nil {
		p.Fatalf("testenv: %v", err)
	}
	p.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
