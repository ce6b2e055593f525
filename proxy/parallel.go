package proxy

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/backend"
)

// bigMessage is the size (from BODYSTRUCTURE) from which a FETCH's candidates are rewritten one at a time, so
// that a range of large messages never holds several of them in memory at once.
const bigMessage = 8 << 20

// maxRewriteWorkers bounds the goroutines one FETCH uses to rewrite (decrypt) its candidates.
const maxRewriteWorkers = 4

// rewriteInOrder runs Rewriter.Rewrite for cands and calls write for each in order, in the session goroutine.
// Rewrites run on up to GOMAXPROCS (at most maxRewriteWorkers) goroutines a bounded distance ahead of the
// writer, so one message's decryption overlaps the next one's upstream fetch. Upstream commands are still one
// at a time: rawFetcher and the \Seen STORE hold s.upMu, because concurrent FETCH commands on one connection
// are ambiguous (RFC 9051 section 5.5). A panic in a Rewriter becomes an error, not a crash.
func (s *session) rewriteInOrder(ctx context.Context, up *backend.Conn, cands []msgMeta, write func(m msgMeta, b []byte) error) error {
	workers := min(runtime.GOMAXPROCS(0), maxRewriteWorkers, len(cands))
	for _, m := range cands {
		if structureSize(m.bs) >= bigMessage {
			workers = 1
		}
	}
	if workers <= 1 {
		for _, m := range cands {
			b, err := s.rewrite(ctx, up, m)
			if err != nil {
				return err
			}
			if err := write(m, b); err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	type result struct {
		b   []byte
		err error
	}
	out := make([]chan result, len(cands))
	for i := range out {
		out[i] = make(chan result, 1)
	}
	ahead := make(chan struct{}, 2*workers) // rewritten but not yet written, or in progress
	work := make(chan int)
	done := make(chan struct{})
	go func() {
		defer close(work)
		for i := range cands {
			select {
			case ahead <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case work <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range work {
				b, err := s.rewrite(ctx, up, cands[i])
				out[i] <- result{b, err}
			}
		}()
	}
	defer func() {
		cancel()
		for range workers {
			<-done
		}
	}()
	for i, m := range cands {
		var r result
		select {
		case r = <-out[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-ahead
		if r.err != nil {
			return r.err
		}
		if err := write(m, r.b); err != nil {
			return err
		}
	}
	return nil
}

// rewrite calls Rewriter.Rewrite for m, turning a panic into an error.
func (s *session) rewrite(ctx context.Context, up *backend.Conn, m msgMeta) (b []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in rewriter", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			b, err = nil, errInternal
		}
	}()
	b, err = s.srv.opts.Rewriter.Rewrite(ctx, s.ref(m.uid), s.rawFetcher(ctx, up, m.uid))
	if err != nil {
		return nil, fmt.Errorf("proxy: rewriting %s UID %d: %w", s.mailbox, m.uid, err)
	}
	return b, nil
}

// structureSize is the size in bytes of a message's body as BODYSTRUCTURE gives it (RFC 9051 section 7.5.2:
// the size of each leaf's body), summed over leaves.
func structureSize(bs imap.BodyStructure) int64 {
	switch b := bs.(type) {
	case *imap.BodyStructureSinglePart:
		return int64(b.Size)
	case *imap.BodyStructureMultiPart:
		var n int64
		for _, c := range b.Children {
			n += structureSize(c)
		}
		return n
	}
	return 0
}
