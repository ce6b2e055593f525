package proxy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// maxCommandLiteral bounds a literal of a command the relay holds in memory (everything but APPEND's
// message data, which streams): mailbox names, passwords, search strings.
const maxCommandLiteral = 8 << 20

// command is a client command forwarded upstream, waiting for its tagged response.
type command struct {
	tag     string
	name    string // upper case, "UID FETCH" for UID commands
	mailbox []byte // SELECT, EXAMINE: the mailbox argument
	fetch   *fetchReq
	auth    *authInfo
	// cont receives true for each continuation request ("+") meant for this command and false when its
	// tagged response arrived.
	cont    chan bool
	forward bool // continuation requests are the client's to answer (IDLE, AUTHENTICATE)
	// tagged, when set, rewrites the tagged response line.
	tagged func(line []byte) []byte
	// untagged, when set, rewrites the command's "* SEARCH" response (nil drops it; sort.go).
	untagged func(line []byte) []byte
	// uidValidity is the UIDVALIDITY seen while a SELECT or EXAMINE ran.
	uidValidity uint32
	// rewrites counts this FETCH's responses being rewritten; expunged is set when one of their messages
	// was gone upstream before its ciphertext could be read (the tagged response then says EXPUNGEISSUED).
	rewrites sync.WaitGroup
	expunged atomic.Bool
	failed   atomic.Bool // a BINARY item could not be computed: the command fails as on the server
}

func newCommand(tag, name string) *command {
	return &command{tag: tag, name: name, cont: make(chan bool, 64)}
}

// clientLoop reads commands from the client until it goes away.
func (r *relay) clientLoop() error {
	for {
		line, err := readLine(r.cr)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				_ = r.send([]byte("* BYE Line too long\r\n"))
			}
			return err
		}
		tag, name, ok := commandName(line)
		if ok && name == "APPEND" && r.userName() != "" {
			if err := r.appendCmd(tag, line); err != nil {
				return err
			}
			continue
		}
		u, tooLarge, err := r.readCommand(line)
		if err != nil {
			return err
		}
		if tooLarge {
			if err := r.local(tag, "BAD Literal too large"); err != nil {
				return err
			}
			continue
		}
		if !ok {
			// Not even a tag: the upstream server says what is wrong.
			if err := r.forward(newCommand("", ""), u); err != nil {
				return err
			}
			continue
		}
		if err := r.dispatch(tag, name, u); err != nil {
			return err
		}
	}
}

// commandName returns a command line's tag and upper-case command name ("UID FETCH" for UID commands).
func commandName(line []byte) (tag, name string, ok bool) {
	s := &scanner{b: trimEOL(line)}
	t, err := s.next()
	if err != nil || t.kind != tokAtom || len(t.val) == 0 {
		return "", "", false
	}
	tag = string(t.val)
	c, err := s.next()
	if err != nil || c.kind != tokAtom {
		return tag, "", true
	}
	name = strings.ToUpper(string(c.val))
	if name == "UID" {
		if c2, err := s.next(); err == nil && c2.kind == tokAtom {
			name += " " + strings.ToUpper(string(c2.val))
		}
	}
	return tag, name, true
}

// readCommand reads the rest of a command whose first line is line: every literal, answering synchronizing
// ones with a continuation request. tooLarge reports a literal over maxCommandLiteral, which was refused (or,
// non-synchronizing, read and dropped with the rest of the command).
func (r *relay) readCommand(line []byte) (u unit, tooLarge bool, err error) {
	u = append(u, line...)
	for {
		m, ok := literalAt(line)
		if !ok {
			return u, tooLarge, nil
		}
		if m.size > maxCommandLiteral || tooLarge {
			if !m.nonSync {
				return nil, true, nil
			}
			if _, err := io.CopyN(io.Discard, r.cr, m.size); err != nil {
				return nil, false, err
			}
			tooLarge = true
		} else {
			if !m.nonSync {
				if err := r.send([]byte("+ OK\r\n")); err != nil {
					return nil, false, err
				}
			}
			if u, err = appendN(u, r.cr, m.size); err != nil {
				return nil, false, err
			}
		}
		if line, err = readLine(r.cr); err != nil {
			return nil, false, err
		}
		if !tooLarge {
			u = append(u, line...)
		}
	}
}

// local answers a command without the upstream server, after the responses to every earlier command (so the
// client sees them in order).
func (r *relay) local(tag, text string) error {
	if err := r.waitIdle(); err != nil {
		return err
	}
	if tag == "" {
		tag = "*"
	}
	return r.send([]byte(tag + " " + text + "\r\n"))
}

// dispatch forwards one complete command, stepping in where the relay must.
func (r *relay) dispatch(tag, name string, u unit) error {
	c := newCommand(tag, name)
	loggedIn := r.userName() != ""
	switch name {
	case "STARTTLS":
		return r.startTLS(tag)
	case "COMPRESS":
		return r.local(tag, "BAD COMPRESS is not offered by smimeproxy")
	case "LOGIN":
		if !loggedIn {
			c.auth = parseLogin(u)
		}
	case "AUTHENTICATE":
		if !loggedIn {
			return r.authenticate(c, u)
		}
	case "SELECT", "EXAMINE":
		c.mailbox = commandArg(u, 0)
	case "IDLE":
		return r.idle(c, u)
	}
	if r.rewriting() {
		switch name {
		case "NOTIFY":
			u = r.prepareNotify(u)
		case "FETCH", "UID FETCH":
			u = r.prepareFetch(c, u)
		case "SEARCH", "UID SEARCH", "SORT", "UID SORT", "THREAD", "UID THREAD":
			var err error
			if u, err = r.prepareSearch(c, u); err != nil || u == nil {
				return err // nil: answered by the relay
			}
		case "CANCELUPDATE":
			r.prepareCancelUpdate(c, u)
		}
	}
	return r.forward(c, u)
}

// commandArg returns the value of the i-th argument (an astring) after the command name, or nil.
func commandArg(u unit, i int) []byte {
	s := &scanner{b: u}
	s.next() // tag
	if t, _ := s.next(); t.kind == tokAtom && strings.EqualFold(string(t.val), "UID") {
		s.next()
	}
	for j := 0; ; j++ {
		t, err := s.next()
		if err != nil {
			return nil
		}
		v, ok := astring(t)
		if !ok {
			return nil
		}
		if j == i {
			return v
		}
	}
}

// forward records c as pending and writes u upstream.
func (r *relay) forward(c *command, u unit) error {
	r.addPending(c)
	return r.writeUpstream(c, u)
}

// writeUpstream writes a command upstream. A literal is sent non-synchronizing when the upstream allows it
// (RFC 7888); otherwise the relay waits for the upstream's continuation request, and stops sending the
// command if its tagged response (a refusal) comes instead.
func (r *relay) writeUpstream(c *command, u unit) error {
	for len(u) > 0 {
		end := bytes.IndexByte(u, '\n')
		if end < 0 {
			end = len(u) - 1
		}
		line := u[:end+1]
		u = u[end+1:]
		m, ok := literalAt(line)
		if !ok {
			if _, err := r.upw.Write(line); err != nil {
				return err
			}
			continue
		}
		sent, err := r.writeLiteralMarker(c, line[:m.at], m)
		if err != nil {
			return err
		}
		if !sent {
			return nil
		}
		if _, err := r.upw.Write(u[:m.size]); err != nil {
			return err
		}
		u = u[m.size:]
	}
	return r.upw.Flush()
}

// writeLiteralMarker writes prefix and a literal announcement of m's size and kind. It returns false when the
// upstream refused the literal (the command is over).
func (r *relay) writeLiteralMarker(c *command, prefix []byte, m litMarker) (bool, error) {
	r.upw.Write(prefix)
	if m.binary {
		r.upw.WriteByte('~')
	}
	r.upw.WriteByte('{')
	r.upw.WriteString(strconv.FormatInt(m.size, 10))
	r.mu.Lock()
	caps := r.upCaps
	r.mu.Unlock()
	if caps.literalPlus || caps.literalMinus && m.size <= 4096 {
		_, err := r.upw.WriteString("+}\r\n")
		return true, err
	}
	r.upw.WriteString("}\r\n")
	r.mu.Lock()
	r.waitCont = c
	r.mu.Unlock()
	if err := r.upw.Flush(); err != nil {
		return false, err
	}
	select {
	case ok := <-c.cont:
		return ok, nil
	case <-r.done:
		return false, errRelayClosed
	}
}

var errRelayClosed = errors.New("proxy: relay closed")

// idle forwards IDLE (RFC 2177) and, once the upstream has sent its continuation request on to the client,
// the client's DONE.
func (r *relay) idle(c *command, u unit) error {
	c.forward = true
	if err := r.forward(c, u); err != nil {
		return err
	}
	select {
	case ok := <-c.cont:
		if !ok {
			return nil // refused
		}
	case <-r.done:
		return errRelayClosed
	}
	line, err := readLine(r.cr)
	if err != nil {
		return err
	}
	if _, err := r.upw.Write(line); err != nil {
		return err
	}
	return r.upw.Flush()
}

// authInfo is how a client logged in: enough to log a second upstream connection in as the same user.
type authInfo struct {
	login     bool   // LOGIN command (user, password) rather than AUTHENTICATE
	mech      string // upper case
	user      string // key-store user: authorization identity, else authentication identity
	password  string // LOGIN
	responses [][]byte
}

// parseLogin reads LOGIN's user name and password (RFC 9051 section 6.2.3).
func parseLogin(u unit) *authInfo {
	user, pass := commandArg(u, 0), commandArg(u, 1)
	if user == nil || pass == nil {
		return nil
	}
	return &authInfo{login: true, user: string(user), password: string(pass)}
}

// authenticate forwards AUTHENTICATE (RFC 9051 section 6.2.2, RFC 4959 SASL-IR) and the client's responses
// to the upstream's challenges, recording them. Mechanisms whose responses cannot be replayed are refused.
func (r *relay) authenticate(c *command, u unit) error {
	mech := commandArg(u, 0)
	if mech == nil || !replayableMech(string(mech)) {
		return r.local(c.tag, "NO [CANNOT] smimeproxy supports the SASL mechanisms PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER")
	}
	info := &authInfo{mech: strings.ToUpper(string(mech))}
	if ir := commandArg(u, 1); ir != nil {
		info.responses = append(info.responses, decodeSASL(ir))
	}
	c.auth, c.forward = info, true
	if err := r.forward(c, u); err != nil {
		return err
	}
	for {
		select {
		case more := <-c.cont:
			if !more {
				return nil
			}
		case <-r.done:
			return errRelayClosed
		}
		line, err := readLine(r.cr)
		if err != nil {
			return err
		}
		info.responses = append(info.responses, decodeSASL(trimEOL(line)))
		if _, err := r.upw.Write(line); err != nil {
			return err
		}
		if err := r.upw.Flush(); err != nil {
			return err
		}
	}
}

func decodeSASL(b []byte) []byte {
	if string(b) == "=" {
		return []byte{}
	}
	out, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil {
		return nil
	}
	return out
}

// identity returns the user a completed SASL exchange authenticated as: PLAIN's authorization identity, else
// its authentication identity (RFC 4616); LOGIN's first response; XOAUTH2's user=; OAUTHBEARER's a=
// (RFC 7628).
func (a *authInfo) identity() (string, error) {
	if a.login {
		return a.user, nil
	}
	if len(a.responses) == 0 {
		return "", errors.New("no SASL response")
	}
	first := a.responses[0]
	switch a.mech {
	case "PLAIN":
		parts := bytes.Split(first, []byte{0})
		if len(parts) != 3 {
			return "", errors.New("malformed PLAIN response")
		}
		if len(parts[0]) > 0 {
			return string(parts[0]), nil
		}
		return string(parts[1]), nil
	case "LOGIN":
		return string(first), nil
	case "XOAUTH2":
		for _, f := range bytes.Split(first, []byte{1}) {
			if v, ok := bytes.CutPrefix(f, []byte("user=")); ok {
				return string(v), nil
			}
		}
	case "OAUTHBEARER":
		gs2, _, _ := bytes.Cut(first, []byte{1})
		for _, f := range bytes.Split(gs2, []byte(",")) {
			if v, ok := bytes.CutPrefix(f, []byte("a=")); ok {
				return strings.NewReplacer("=2C", ",", "=3D", "=").Replace(string(v)), nil
			}
		}
	}
	return "", fmt.Errorf("no user name in the %s exchange", a.mech)
}
