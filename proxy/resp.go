package proxy

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// streamThreshold is the literal size from which a response that is passed through unchanged is streamed to
// the client instead of being read whole first.
const streamThreshold = 256 << 10

// upstreamLoop reads the upstream's responses until the connection ends.
func (r *relay) upstreamLoop() error {
	for {
		if r.up.R.Buffered() == 0 {
			if err := r.flushBatch(); err != nil {
				return err
			}
		}
		// Every handler copies the line before it reads on.
		line, err := peekLine(r.up.R)
		if err != nil {
			r.flushBatch()
			return err
		}
		switch {
		case len(line) > 0 && line[0] == '+':
			if err := r.continuation(line); err != nil {
				return err
			}
		case len(line) > 1 && line[0] == '*' && line[1] == ' ':
			if err := r.untagged(line); err != nil {
				return err
			}
		default:
			if err := r.tagged(line); err != nil {
				return err
			}
		}
	}
}

// continuation routes a continuation request: to the command waiting to send a literal, or on to the client.
func (r *relay) continuation(line []byte) error {
	r.mu.Lock()
	wc := r.waitCont
	r.waitCont = nil
	var fw *command
	if wc == nil {
		for i := len(r.pending) - 1; i >= 0; i-- {
			if r.pending[i].forward {
				fw = r.pending[i]
				break
			}
		}
	}
	r.mu.Unlock()
	if wc != nil {
		wc.cont <- true
		return nil
	}
	if err := r.emit(line); err != nil {
		return err
	}
	if err := r.flushBatch(); err != nil {
		return err
	}
	if fw != nil {
		fw.cont <- true
	}
	return nil
}

// untagged handles one untagged response.
func (r *relay) untagged(line []byte) error {
	kind, num := untaggedKind(line)
	switch kind {
	case "FETCH":
		post := r.ctxFetch(line, num)
		if r.rewriting() && r.selected().ok {
			if err := r.fetchResponse(line, num); err != nil {
				return err
			}
			return r.emitAll(post)
		}
		if err := r.passThrough(line); err != nil {
			return err
		}
		return r.emitAll(post)
	case "EXISTS":
		if err := r.passThrough(line); err != nil {
			return err
		}
		return r.emitAll(r.ctxExists(num))
	case "EXPUNGE":
		if err := r.emitAll(r.ctxExpunge(num)); err != nil {
			return err
		}
	case "VANISHED":
		if err := r.emitAll(r.ctxVanished(line)); err != nil {
			return err
		}
	case "ESEARCH":
		if line = r.ctxFilter(line); line == nil {
			return nil
		}
	case "OK", "NO", "BAD", "PREAUTH", "BYE":
		if i := indexFold(line, "[NOUPDATE "); i >= 0 {
			// The server keeps no context for this search (RFC 5267 section 4.2): neither does the relay.
			s := &scanner{b: line, pos: i + len("[NOUPDATE ")}
			if t, err := s.next(); err == nil {
				if tag, ok := astring(t); ok {
					r.dropContexts(func(x *searchCtx) bool { return x.tag == string(tag) })
				}
			}
		}
		line = r.statusCodes(line)
		if kind == "BYE" {
			r.mu.Lock()
			r.sawBye = true
			r.mu.Unlock()
		}
	case "":
		if isSearchResponse(line) {
			if h := r.searchHook(); h != nil {
				if line = h(line); line == nil {
					return nil
				}
			}
		}
	case "CAPABILITY":
		line = r.filterCaps(line)
	case "ENABLED":
		if indexFold(line, "UTF8=ACCEPT") >= 0 {
			r.mu.Lock()
			r.utf8 = true
			r.mu.Unlock()
		}
	}
	return r.passThrough(line)
}

// untaggedKind returns the upper-case kind of an untagged response ("FETCH" for "* 3 FETCH (...)") and the
// number before it, if any.
func untaggedKind(line []byte) (string, uint32) {
	word := func(b []byte) ([]byte, []byte) {
		end := 0
		for end < len(b) && b[end] != ' ' && b[end] != '\r' && b[end] != '\n' && b[end] != '[' && b[end] != '(' {
			end++
		}
		rest := b[end:]
		for len(rest) > 0 && rest[0] == ' ' {
			rest = rest[1:]
		}
		return b[:end], rest
	}
	first, rest := word(line[2:])
	if len(first) == 0 {
		return "", 0
	}
	if first[0] >= '0' && first[0] <= '9' {
		n, err := strconv.ParseUint(string(first), 10, 32)
		if err != nil {
			return "", 0
		}
		k, _ := word(rest)
		return upperKind(k), uint32(n)
	}
	return upperKind(first), 0
}

// upperKind returns the few response kinds the relay looks at without allocating.
func upperKind(k []byte) string {
	for _, s := range [...]string{"FETCH", "OK", "NO", "BAD", "PREAUTH", "BYE", "CAPABILITY", "ENABLED", "EXISTS", "EXPUNGE", "VANISHED", "ESEARCH"} {
		if bytes.EqualFold(k, []byte(s)) {
			return s
		}
	}
	return ""
}

// statusCodes looks at the response code of a status response: capabilities are filtered; UIDVALIDITY is
// remembered for the SELECT or EXAMINE in progress (RFC 9051 section 7.1).
func (r *relay) statusCodes(line []byte) []byte {
	if i := indexFold(line, "[UIDVALIDITY "); i >= 0 {
		rest := line[i+len("[UIDVALIDITY "):]
		if j := bytes.IndexByte(rest, ']'); j > 0 {
			if v, err := strconv.ParseUint(string(rest[:j]), 10, 32); err == nil {
				r.mu.Lock()
				for _, c := range r.pending {
					if c.name == "SELECT" || c.name == "EXAMINE" {
						c.uidValidity = uint32(v)
						break
					}
				}
				r.mu.Unlock()
			}
		}
	}
	if indexFold(line, "[CLOSED]") >= 0 {
		// QRESYNC (RFC 7162 section 3.2.11): the previous mailbox is closed, the new one not yet open.
		r.mu.Lock()
		r.mbox = mailboxRef{}
		r.mu.Unlock()
		r.mailboxChanged()
	}
	return r.filterCaps(line)
}

func (r *relay) filterCaps(line []byte) []byte {
	return r.clientCaps(line, func(list []byte) {
		cs := parseCaps(list)
		r.mu.Lock()
		r.upCaps = cs
		r.mu.Unlock()
	})
}

// tagged handles a tagged status response: the command is complete.
func (r *relay) tagged(line []byte) error {
	tag, rest, _ := bytes.Cut(line, []byte(" "))
	c := r.findPending(tag)
	line = r.statusCodes(line)
	if c == nil {
		if err := r.emit(line); err != nil {
			return err
		}
		return r.flushBatch()
	}
	// Removed only once its tagged response is queued: a command the relay answers itself after waiting for
	// the pending ones (waitIdle) must come after it.
	defer r.removePending(c)
	defer func() { c.cont <- false }()
	ok := len(rest) >= 2 && bytes.EqualFold(rest[:2], []byte("OK"))
	r.completed(c, ok)
	if (c.name == "STORE" || c.name == "UID STORE") && ok {
		// Flags of encrypted messages a search context judges may have changed silently (STORE.SILENT).
		if err := r.emitAll(r.ctxRefresh()); err != nil {
			return err
		}
	}
	if c.tagged != nil {
		line = c.tagged(line)
	}
	r.mu.Lock()
	if r.waitCont == c {
		r.waitCont = nil
	}
	r.mu.Unlock()
	if d := r.loginDelay(); d > 0 && !ok && (c.name == "LOGIN" || c.name == "AUTHENTICATE") {
		if err := r.flushBatch(); err != nil {
			return err
		}
		fut := make(chan [][]byte, 1)
		line = append([]byte(nil), line...)
		time.AfterFunc(d, func() { fut <- [][]byte{line} })
		return r.sendFuture(fut)
	}
	if c.fetch == nil {
		if err := r.emit(line); err != nil {
			return err
		}
		return r.flushBatch()
	}
	// The tagged response follows the rewritten responses; it says EXPUNGEISSUED (RFC 9051 section 7.1) when
	// a message was left out because it vanished upstream meanwhile.
	if err := r.flushBatch(); err != nil {
		return err
	}
	fut := make(chan [][]byte, 1)
	line = append([]byte(nil), line...)
	go func() {
		c.rewrites.Wait()
		if c.failed.Load() {
			line = []byte(c.tag + " NO [PARSE] Invalid data in MIME part\r\n")
		} else if c.expunged.Load() {
			line = withExpungeIssued(line)
		}
		fut <- [][]byte{line}
	}()
	return r.sendFuture(fut)
}

// emitAll queues responses the relay composed (search context updates) in stream order.
func (r *relay) emitAll(lines [][]byte) error {
	for _, l := range lines {
		if err := r.emit(l); err != nil {
			return err
		}
	}
	return nil
}

// withExpungeIssued adds the EXPUNGEISSUED response code to a tagged OK or NO that has no code.
func withExpungeIssued(line []byte) []byte {
	tag, rest, _ := bytes.Cut(line, []byte(" "))
	status, text, _ := bytes.Cut(rest, []byte(" "))
	if bytes.HasPrefix(text, []byte("[")) || !(bytes.EqualFold(status, []byte("OK")) || bytes.EqualFold(status, []byte("NO"))) {
		return line
	}
	out := append(append([]byte(nil), tag...), ' ')
	out = append(out, status...)
	out = append(out, " [EXPUNGEISSUED] "...)
	return append(out, text...)
}

// completed updates the relay's view of the session after command c completed.
func (r *relay) completed(c *command, ok bool) {
	switch c.name {
	case "SELECT", "EXAMINE":
		m := mailboxRef{}
		if ok {
			m = r.mailboxRef(c.mailbox, c.uidValidity)
		}
		r.mu.Lock()
		r.mbox = m
		r.mu.Unlock()
		r.dropContexts(func(*searchCtx) bool { return true }) // the count is the new mailbox's (its EXISTS)
	case "CLOSE", "UNSELECT":
		if ok {
			r.mu.Lock()
			r.mbox = mailboxRef{}
			r.mu.Unlock()
			r.mailboxChanged()
		}
	case "LOGIN", "AUTHENTICATE":
		if c.auth == nil {
			return
		}
		if !ok {
			r.log.Info("login refused upstream")
			r.srv.opts.Metrics.Login(false)
			r.failures++
			return
		}
		r.loggedIn(c.auth)
	}
}

// mailboxRef names a mailbox selected with the wire name w. The name is decoded from modified UTF-7
// (RFC 3501 section 5.1.3) unless UTF8=ACCEPT is on; a name that does not decode is relayed, but its
// messages are not decrypted (the side connection could not name it).
func (r *relay) mailboxRef(w []byte, uidValidity uint32) mailboxRef {
	m := mailboxRef{wire: string(w), uidValidity: uidValidity}
	r.mu.Lock()
	utf8 := r.utf8
	r.mu.Unlock()
	if strings.EqualFold(m.wire, "INBOX") {
		m.name, m.ok = "INBOX", true
	} else if utf8 {
		m.name, m.ok = m.wire, true
	} else if name, err := decodeMUTF7(m.wire); err == nil {
		m.name, m.ok = name, true
	}
	m.ok = m.ok && uidValidity != 0
	return m
}

// passThrough sends a response unchanged: the line, and, when it announces a literal, the literal and the
// rest of the response, streaming large literals.
func (r *relay) passThrough(line []byte) error {
	m, ok := literalAt(line)
	if !ok {
		return r.emit(line)
	}
	buf := append([]byte(nil), line...)
	for {
		m, ok = literalAt(line)
		if !ok {
			return r.emit(buf)
		}
		if m.size >= streamThreshold {
			var err error
			if buf, line, err = r.stream(buf, m.size); err != nil {
				return err
			}
			continue
		}
		var err error
		if buf, err = appendN(buf, r.up.R, m.size); err != nil {
			return err
		}
		if line, err = readLine(r.up.R); err != nil {
			return err
		}
		buf = append(buf, line...)
	}
}

// stream sends prefix, then n literal bytes copied by the writer straight from the upstream, then the next
// line; it returns the next line as the new buffer (and as line, to look for another literal).
func (r *relay) stream(prefix []byte, n int64) (buf, line []byte, err error) {
	if err := r.flushBatch(); err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	select {
	case r.out <- outEntry{data: prefix, stream: &streamEntry{n: n, done: done}}:
	case <-r.done:
		return nil, nil, errRelayClosed
	}
	select {
	case err := <-done:
		if err != nil {
			return nil, nil, err
		}
	case <-r.done:
		return nil, nil, errRelayClosed
	}
	line, err = readLine(r.up.R)
	if err != nil {
		return nil, nil, err
	}
	return append([]byte(nil), line...), line, nil
}
