package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// The concurrency test: a desktop client goes through the proxy (decryption on) while a phone, connected
// directly to Dovecot, appends (half of it S/MIME-encrypted), flags and expunges in INBOX. The client keeps
// the model a real client must keep from what it is sent (sequence number -> UID) and checks every response
// against it and against the content it knows each message has.

const (
	ccInitial  = 10               // messages in INBOX before the sessions start
	ccOps      = 300              // operations of each session, at most
	ccDuration = 20 * time.Second // and at most this long
	ccMinCrypt = 3                // decrypted messages the client must see while the phone is busy
)

// ccMsg is one test message: its id is in its Message-ID (<cc-NNNNN@example.org>) and its body holds the
// marker zqNNNNNqz (only in the plaintext: an encrypted message's upstream copy does not contain it).
type ccMsg struct {
	id        int
	encrypted bool
	raw       []byte // as appended
	text      []byte // the plaintext body (CRLF)
}

func ccMarker(id int) string { return fmt.Sprintf("zq%05dqz", id) }

var (
	ccMessageIDRE = regexp.MustCompile(`<cc-(\d{5})@example\.org>`)
	ccMarkerRE    = regexp.MustCompile(`zq(\d{5})qz`)
	ccStatusRE    = regexp.MustCompile(`(?im)^X-Smimeproxy-Status:[ \t]*decrypted\b`)
	ccAppendUIDRE = regexp.MustCompile(`\[APPENDUID \d+ (\d+)\]`)
)

func ccMessages(t *testing.T, n int, cert *x509.Certificate) []ccMsg {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	out := make([]ccMsg, n)
	for id := range n {
		var body strings.Builder
		fmt.Fprintf(&body, "Message %d of the consistency test.\nsecret marker %s\n", id, ccMarker(id))
		for i := range rng.IntN(40) {
			fmt.Fprintf(&body, "padding line %d of message %d %s\n", i, id, strings.Repeat("~", rng.IntN(60)))
		}
		plain := msg([]string{"From: phone@example.org", "To: alice@example.org", fmt.Sprintf("Subject: note %d", id),
			"Date: Mon, 02 Mar 2026 10:00:00 +0100", fmt.Sprintf("Message-ID: <cc-%05d@example.org>", id),
			"MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"}, body.String())
		_, text, _ := bytes.Cut(plain, []byte("\r\n\r\n"))
		m := ccMsg{id: id, encrypted: id%2 == 1, raw: plain, text: text}
		if m.encrypted {
			enc, err := decrypt.EncryptToSelf(plain, []*x509.Certificate{cert})
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(enc, []byte(ccMarker(id))) {
				t.Fatalf("message %d: the marker is visible in the ciphertext", id)
			}
			m.raw = enc
		}
		out[id] = m
	}
	return out
}

// ---- a small parser of the responses the test needs -------------------------------------------------------

// ccValue is one value of a FETCH item.
type ccValue struct {
	isNil bool
	s     string // atom, quoted string content, literal data, or the raw text of a parenthesized list
}

// ccFetch is one "* n FETCH (...)" response.
type ccFetch struct {
	seq   int
	items map[string]ccValue // upper-case item names
	uid   uint32             // the UID item, or else the model's UID for seq (0: unknown)
	raw   string
}

type ccParser struct {
	s string
	i int
}

func (p *ccParser) fail(what string) error {
	return fmt.Errorf("cannot parse %s at offset %d of %s", what, p.i, ccShort(p.s))
}

func (p *ccParser) expect(lit string) error {
	if !strings.HasPrefix(p.s[p.i:], lit) {
		return p.fail(strconv.Quote(lit))
	}
	p.i += len(lit)
	return nil
}

func (p *ccParser) number() (int, error) {
	j := p.i
	for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(p.s[p.i:j])
	if err != nil {
		return 0, p.fail("number")
	}
	p.i = j
	return n, nil
}

// value parses NIL, an atom or number, a quoted string, a literal (already inline) or a parenthesized list.
func (p *ccParser) value() (ccValue, error) {
	if p.i >= len(p.s) {
		return ccValue{}, p.fail("value")
	}
	switch c := p.s[p.i]; {
	case c == '(':
		start := p.i
		p.i++
		for {
			for p.i < len(p.s) && p.s[p.i] == ' ' {
				p.i++
			}
			if p.i >= len(p.s) {
				return ccValue{}, p.fail("list")
			}
			if p.s[p.i] == ')' {
				p.i++
				return ccValue{s: p.s[start:p.i]}, nil
			}
			if _, err := p.value(); err != nil {
				return ccValue{}, err
			}
		}
	case c == '"':
		var b strings.Builder
		for p.i++; p.i < len(p.s); p.i++ {
			switch p.s[p.i] {
			case '\\':
				p.i++
				if p.i < len(p.s) {
					b.WriteByte(p.s[p.i])
				}
			case '"':
				p.i++
				return ccValue{s: b.String()}, nil
			case '\r', '\n':
				return ccValue{}, p.fail("quoted string")
			default:
				b.WriteByte(p.s[p.i])
			}
		}
		return ccValue{}, p.fail("quoted string")
	case c == '{' || c == '~':
		if c == '~' {
			p.i++
		}
		if err := p.expect("{"); err != nil {
			return ccValue{}, err
		}
		n, err := p.number()
		if err != nil {
			return ccValue{}, err
		}
		if err := p.expect("}\r\n"); err != nil {
			return ccValue{}, err
		}
		if p.i+n > len(p.s) {
			return ccValue{}, p.fail("literal data")
		}
		v := ccValue{s: p.s[p.i : p.i+n]}
		p.i += n
		return v, nil
	default:
		j := p.i
		for j < len(p.s) && !strings.ContainsRune(" ()\r\n", rune(p.s[j])) {
			j++
		}
		if j == p.i {
			return ccValue{}, p.fail("atom")
		}
		a := p.s[p.i:j]
		p.i = j
		if strings.EqualFold(a, "NIL") {
			return ccValue{isNil: true}, nil
		}
		return ccValue{s: a}, nil
	}
}

// ccParseFetch parses "* n FETCH (name value ...)\r\n".
func ccParseFetch(resp string) (*ccFetch, error) {
	p := &ccParser{s: resp}
	if err := p.expect("* "); err != nil {
		return nil, err
	}
	seq, err := p.number()
	if err != nil {
		return nil, err
	}
	if err := p.expect(" FETCH ("); err != nil {
		return nil, err
	}
	f := &ccFetch{seq: seq, items: map[string]ccValue{}, raw: resp}
	for {
		for p.i < len(p.s) && p.s[p.i] == ' ' {
			p.i++
		}
		if p.i < len(p.s) && p.s[p.i] == ')' {
			p.i++
			if p.s[p.i:] != "\r\n" {
				return nil, p.fail("end of response")
			}
			return f, nil
		}
		start := p.i
		for p.i < len(p.s) && p.s[p.i] != ' ' && p.s[p.i] != ')' && p.s[p.i] != '\r' {
			if p.s[p.i] == '[' {
				end := strings.IndexByte(p.s[p.i:], ']')
				if end < 0 {
					return nil, p.fail("section")
				}
				p.i += end
			}
			p.i++
		}
		name := strings.ToUpper(p.s[start:p.i])
		if name == "" {
			return nil, p.fail("item name")
		}
		if err := p.expect(" "); err != nil {
			return nil, err
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		if _, dup := f.items[name]; dup {
			return nil, fmt.Errorf("item %s twice in %s", name, ccShort(resp))
		}
		f.items[name] = v
	}
}

// ccShort renders a response for an error message, long literals cut.
func ccShort(s string) string {
	if len(s) > 600 {
		return strconv.Quote(s[:400]) + fmt.Sprintf(" ... (%d bytes) ... ", len(s)) + strconv.Quote(s[len(s)-150:])
	}
	return strconv.Quote(s)
}

// ccStatus returns the status (OK, NO, BAD) of a tagged response and its text.
func ccStatus(tagged string) (string, string) {
	_, rest, _ := strings.Cut(strings.TrimRight(tagged, "\r\n"), " ")
	st, text, _ := strings.Cut(rest, " ")
	return strings.ToUpper(st), text
}

// ---- the phone: a session directly on Dovecot ----------------------------------------------------------------

// ccConn is a minimal IMAP client that returns errors (it runs on its own goroutine, where the test must not
// call FailNow).
type ccConn struct {
	c     net.Conn
	br    *bufio.Reader
	n     int
	count int // messages in the selected mailbox, from EXISTS and EXPUNGE
}

func ccDial(addr string) (*ccConn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	r := &ccConn{c: c, br: bufio.NewReader(c)}
	if _, err := r.readResponse(); err != nil {
		c.Close()
		return nil, err
	}
	return r, nil
}

func (r *ccConn) readResponse() (string, error) {
	r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var b strings.Builder
	for {
		line, err := r.br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		m := literalRE.FindStringSubmatch(line)
		if m == nil {
			return b.String(), nil
		}
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(r.br, buf); err != nil {
			return b.String(), err
		}
		b.Write(buf)
	}
}

var (
	ccFetchLineRE = regexp.MustCompile(`^\* \d+ FETCH `)
	ccExistsRE    = regexp.MustCompile(`^\* (\d+) EXISTS\r\n$`)
	ccExpungeRE   = regexp.MustCompile(`^\* (\d+) EXPUNGE\r\n$`)
)

// do sends a command (a literal in it must be non-synchronizing) and returns its responses; it fails unless
// the tagged response is OK.
func (r *ccConn) do(cmd string) ([]string, error) {
	r.n++
	tag := fmt.Sprintf("p%d", r.n)
	r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(r.c, tag+" "+cmd+"\r\n"); err != nil {
		return nil, err
	}
	var out []string
	for {
		resp, err := r.readResponse()
		if err != nil {
			return out, fmt.Errorf("%s: %v after %q", ccFirstLine(cmd), err, out)
		}
		out = append(out, resp)
		if m := ccExistsRE.FindStringSubmatch(resp); m != nil {
			r.count, _ = strconv.Atoi(m[1])
		} else if ccExpungeRE.MatchString(resp) {
			r.count--
		}
		if strings.HasPrefix(resp, tag+" ") {
			if st, _ := ccStatus(resp); st != "OK" {
				return out, fmt.Errorf("%s: %q", ccFirstLine(cmd), resp)
			}
			return out, nil
		}
	}
}

func ccFirstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// ccPhone is the other session: it appends, flags and expunges; appendUID records what APPENDUID said.
type ccPhone struct {
	conn                                    *ccConn
	rng                                     *rand.Rand
	msgs                                    []ccMsg
	next                                    int // next message to append
	uidplus                                 bool
	mu                                      sync.Mutex
	appendUID                               map[uint32]int // UID -> message id
	appends, flagOps, expunges, uidExpunges int
}

func (p *ccPhone) appendNext() (uint32, error) {
	m := p.msgs[p.next]
	p.next++
	flags := ""
	if p.rng.IntN(3) == 0 {
		flags = `(\Seen) `
	}
	out, err := p.conn.do(fmt.Sprintf("APPEND INBOX %s{%d+}\r\n%s", flags, len(m.raw), m.raw))
	if err != nil {
		return 0, err
	}
	g := ccAppendUIDRE.FindStringSubmatch(out[len(out)-1])
	if g == nil {
		return 0, fmt.Errorf("APPEND: no APPENDUID in %q", out[len(out)-1])
	}
	uid, _ := strconv.ParseUint(g[1], 10, 32)
	p.mu.Lock()
	p.appendUID[uint32(uid)] = m.id
	p.mu.Unlock()
	p.appends++
	return uint32(uid), nil
}

// expungeUID expunges one message by UID (UIDPLUS).
func (p *ccPhone) expungeUID(uid uint32) error {
	if _, err := p.conn.do(fmt.Sprintf(`UID STORE %d +FLAGS.SILENT (\Deleted)`, uid)); err != nil {
		return err
	}
	_, err := p.conn.do(fmt.Sprintf("UID EXPUNGE %d", uid))
	p.uidExpunges++
	return err
}

// run performs up to ccOps operations until the deadline or stop, pausing a little between them.
func (p *ccPhone) run(deadline time.Time, stop <-chan struct{}) error {
	for i := 0; i < ccOps && time.Now().Before(deadline); i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		op := p.rng.IntN(100)
		count := p.conn.count
		var err error
		switch {
		case (op < 42 || count < 6) && p.next < len(p.msgs):
			_, err = p.appendNext()
		case op < 50 && p.uidplus && p.next < len(p.msgs):
			// A short-lived message: expunged soon after it arrived, likely before the proxy classified it
			// (while the client may be fetching it).
			var uid uint32
			if uid, err = p.appendNext(); err == nil {
				time.Sleep(time.Duration(p.rng.IntN(10000)) * time.Microsecond)
				err = p.expungeUID(uid)
			}
		case op < 72:
			flag := []string{`\Seen`, `\Answered`, `$Phone`}[p.rng.IntN(3)]
			sign := []string{"+", "-"}[p.rng.IntN(2)]
			_, err = p.conn.do(fmt.Sprintf("STORE %d %sFLAGS (%s)", 1+p.rng.IntN(count), sign, flag))
			p.flagOps++
		case op < 86 || !p.uidplus:
			set := strconv.Itoa(1 + p.rng.IntN(count))
			if p.rng.IntN(3) == 0 {
				set += "," + strconv.Itoa(1+p.rng.IntN(count))
			}
			if _, err = p.conn.do(`STORE ` + set + ` +FLAGS.SILENT (\Deleted)`); err == nil {
				_, err = p.conn.do("EXPUNGE")
			}
			p.expunges++
		default:
			var out []string
			seq := 1 + p.rng.IntN(count)
			if out, err = p.conn.do(fmt.Sprintf("FETCH %d (UID)", seq)); err != nil {
				break
			}
			var uid uint32
			for _, r := range out {
				if f, ferr := ccParseFetch(r); ferr == nil && f.seq == seq {
					if v, ok := f.items["UID"]; ok {
						n, _ := strconv.ParseUint(v.s, 10, 32)
						uid = uint32(n)
					}
				}
			}
			if uid == 0 {
				return fmt.Errorf("FETCH %d (UID): no UID in %q", seq, out)
			}
			err = p.expungeUID(uid)
		}
		if err != nil {
			return err
		}
		time.Sleep(time.Duration(p.rng.IntN(20000)) * time.Microsecond)
	}
	return nil
}

// ---- the desktop: a session through the proxy, with its model ----------------------------------------------

// ccDesktop is the client session through the proxy and the model it keeps.
type ccDesktop struct {
	t    *testing.T
	w    *wireConn
	rng  *rand.Rand
	msgs []ccMsg

	step int    // operation number, for messages
	cmd  string // command being checked

	uids []uint32        // the model: UID of each sequence number, 0 while unknown
	gone map[uint32]bool // UIDs the client saw expunged

	uidID     map[uint32]int    // message id learned from content
	bodySize  map[uint32]int    // BODY[] size served for a UID
	textSize  map[uint32]int    // BODY[TEXT] size served for a UID
	mustBeGon map[uint32]string // UIDs that had no content or were not found by SEARCH: expunged by the end
	doomed    []string          // the same for messages whose UID is unknown, by position (beside uids)
	flags     []string          // the last FLAGS sent for each position, "" while unknown (beside uids)

	legit                   map[string]int // tolerated answers about messages expunged meanwhile, by kind
	encSearches             int
	phoneBusy               *atomic.Bool
	decrypted               map[uint32]bool
	decryptedWhileBusy      int
	bodies, texts, searches int
}

// ccReply is one command's responses as the model saw them.
type ccReply struct {
	fetches  []*ccFetch
	hits     [][2]int // SEARCH hits: sequence number and the model's UID for it when the response came
	searched bool
	expunges int
	tagged   string
	status   string
}

func (d *ccDesktop) fatalf(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf("step %d, %q: %s", d.step, ccFirstLine(d.cmd), fmt.Sprintf(format, args...))
}

// neighbours returns the nearest known UIDs before and after position i (0 when none).
func (d *ccDesktop) neighbours(i int) (before, after uint32) {
	for j := i - 1; j >= 0; j-- {
		if d.uids[j] != 0 {
			before = d.uids[j]
			break
		}
	}
	for j := i + 1; j < len(d.uids); j++ {
		if d.uids[j] != 0 {
			after = d.uids[j]
			break
		}
	}
	return before, after
}

// learn records that sequence number seq is the message with uid.
func (d *ccDesktop) learn(seq int, uid uint32, resp string) {
	d.t.Helper()
	if d.gone[uid] {
		d.fatalf("response names UID %d at sequence number %d, but that message was expunged (an EXPUNGE told so earlier): %s", uid, seq, ccShort(resp))
	}
	cur := d.uids[seq-1]
	if cur == uid {
		return
	}
	if cur != 0 {
		d.fatalf("sequence number %d is UID %d in the client's model, but the response says UID %d (stale sequence number or lost EXPUNGE): %s", seq, cur, uid, ccShort(resp))
	}
	before, after := d.neighbours(seq - 1)
	if before >= uid || (after != 0 && after <= uid) {
		d.fatalf("UID %d at sequence number %d breaks UID order (known neighbours %d and %d): %s", uid, seq, before, after, ccShort(resp))
	}
	d.uids[seq-1] = uid
}

// apply updates the model with one untagged response and checks it.
func (d *ccDesktop) apply(resp string, rep *ccReply) {
	d.t.Helper()
	switch {
	case strings.HasPrefix(resp, "* BAD"), strings.HasPrefix(resp, "* BYE"), strings.Contains(resp, "[SERVERBUG]"):
		d.fatalf("bad untagged response %s", ccShort(resp))
	case ccExistsRE.MatchString(resp):
		n, _ := strconv.Atoi(ccExistsRE.FindStringSubmatch(resp)[1])
		if n < len(d.uids) {
			d.fatalf("EXISTS says %d messages, the client counts %d after every EXPUNGE it was sent: %s", n, len(d.uids), ccShort(resp))
		}
		for len(d.uids) < n {
			d.uids = append(d.uids, 0)
			d.doomed = append(d.doomed, "")
			d.flags = append(d.flags, "")
		}
	case ccExpungeRE.MatchString(resp):
		n, _ := strconv.Atoi(ccExpungeRE.FindStringSubmatch(resp)[1])
		if n < 1 || n > len(d.uids) {
			d.fatalf("EXPUNGE of sequence number %d, but the client knows of %d messages: %s", n, len(d.uids), ccShort(resp))
		}
		if u := d.uids[n-1]; u != 0 {
			d.gone[u] = true
		}
		d.uids = slices.Delete(d.uids, n-1, n)
		d.doomed = slices.Delete(d.doomed, n-1, n)
		d.flags = slices.Delete(d.flags, n-1, n)
		rep.expunges++
	case strings.HasPrefix(resp, "* SEARCH"):
		rep.searched = true
		for _, f := range strings.Fields(strings.TrimPrefix(resp, "* SEARCH")) {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > len(d.uids) {
				d.fatalf("SEARCH result %q outside the %d messages the client knows of: %s", f, len(d.uids), ccShort(resp))
			}
			rep.hits = append(rep.hits, [2]int{n, int(d.uids[n-1])})
		}
	case ccFetchLineRE.MatchString(resp):
		f, err := ccParseFetch(resp)
		if err != nil {
			d.fatalf("%v", err)
		}
		if f.seq < 1 || f.seq > len(d.uids) {
			d.fatalf("FETCH for sequence number %d, but the client knows of %d messages: %s", f.seq, len(d.uids), ccShort(resp))
		}
		if v, ok := f.items["UID"]; ok {
			n, err := strconv.ParseUint(v.s, 10, 32)
			if err != nil || n == 0 {
				d.fatalf("bad UID in %s", ccShort(resp))
			}
			d.learn(f.seq, uint32(n), resp)
		}
		f.uid = d.uids[f.seq-1]
		if v, ok := f.items["FLAGS"]; ok {
			d.flags[f.seq-1] = v.s
		}
		rep.fetches = append(rep.fetches, f)
	}
}

// run sends one command and reads its responses up to the tagged one, applying each to the model.
func (d *ccDesktop) run(cmd string) *ccReply {
	d.t.Helper()
	d.cmd = cmd
	d.w.n++
	tag := fmt.Sprintf("t%d", d.w.n)
	d.w.send(tag + " " + cmd + "\r\n")
	return d.readReply(tag)
}

func (d *ccDesktop) readReply(tag string) *ccReply {
	d.t.Helper()
	rep := &ccReply{}
	for {
		resp := d.w.readResponse()
		if strings.HasPrefix(resp, "* ") {
			d.apply(resp, rep)
			continue
		}
		if !strings.HasPrefix(resp, tag+" ") {
			d.fatalf("unexpected response %s", ccShort(resp))
		}
		rep.tagged = resp
		rep.status, _ = ccStatus(resp)
		if strings.Contains(resp, "[EXPUNGEISSUED]") {
			d.legit[rep.status+" [EXPUNGEISSUED]"]++
		}
		switch {
		case strings.Contains(resp, "[SERVERBUG]") || rep.status == "BAD":
			d.fatalf("tagged response %s", ccShort(resp))
		case rep.status == "NO" && !strings.Contains(resp, "[EXPUNGEISSUED]"):
			d.fatalf("tagged response %s", ccShort(resp))
		case rep.status != "OK" && rep.status != "NO":
			d.fatalf("tagged response %s", ccShort(resp))
		}
		return rep
	}
}

func (rep *ccReply) expungeIssued() bool { return strings.Contains(rep.tagged, "[EXPUNGEISSUED]") }

// checkCovered requires a FETCH response for every message of a "1:*" FETCH that was there when the command
// was sent (before: the model then) and was not expunged meanwhile. When the server said some were
// (EXPUNGEISSUED), a message the client knew that got no response must be expunged by the end.
func (d *ccDesktop) checkCovered(rep *ccReply, before []uint32, item string) {
	d.t.Helper()
	count := len(before)
	seen := map[int]bool{}
	fetched := map[uint32]bool{}
	for _, f := range rep.fetches {
		if _, ok := f.items[item]; ok {
			seen[f.seq] = true
			fetched[f.uid] = true
		}
	}
	if rep.expungeIssued() {
		for _, u := range before {
			if u != 0 && !fetched[u] && !d.gone[u] {
				d.mustBeGon[u] = fmt.Sprintf("step %d: %q left it out (%s)", d.step, ccFirstLine(d.cmd), ccShort(rep.tagged))
			}
		}
		return
	}
	for s := 1; s <= count-rep.expunges; s++ {
		if !seen[s] {
			d.fatalf("no FETCH response with %s for sequence number %d (%d messages when sent, %d expunged since) and no EXPUNGEISSUED: tagged %s",
				item, s, count, rep.expunges, ccShort(rep.tagged))
		}
	}
}

// checkID records that uid is message id and requires it to be so every time.
func (d *ccDesktop) checkID(uid uint32, id int, what string) {
	d.t.Helper()
	if id < 0 || id >= len(d.msgs) {
		d.fatalf("%s of UID %d names message %d, which the test never appended", what, uid, id)
	}
	if uid == 0 {
		return
	}
	if old, ok := d.uidID[uid]; ok && old != id {
		d.fatalf("%s: UID %d served as message %d, earlier as message %d", what, uid, id, old)
	}
	d.uidID[uid] = id
}

// checkMarkers requires content to hold the marker of message id and no other message's.
func (d *ccDesktop) checkMarkers(content string, id int, what string, f *ccFetch) {
	d.t.Helper()
	ms := ccMarkerRE.FindAllString(content, -1)
	if len(ms) == 0 || slices.ContainsFunc(ms, func(m string) bool { return m != ccMarker(id) }) {
		d.fatalf("%s of sequence number %d, UID %d (message %d): markers %v, want only %s: %s", what, f.seq, f.uid, id, ms, ccMarker(id), ccShort(f.raw))
	}
}

// checkBody checks a served BODY[]: size, the message it is, its content (decrypted when it was encrypted).
func (d *ccDesktop) checkBody(f *ccFetch) {
	d.t.Helper()
	body := f.items["BODY[]"]
	if body.isNil || body.s == "" {
		d.legit["BODY[] NIL or empty"]++
		d.mustBeGon[f.uid] = fmt.Sprintf("step %d: %q served BODY[] NIL or empty: %s", d.step, ccFirstLine(d.cmd), ccShort(f.raw))
		return
	}
	d.bodies++
	sizeV, ok := f.items["RFC822.SIZE"]
	if !ok {
		d.fatalf("no RFC822.SIZE for UID %d: %s", f.uid, ccShort(f.raw))
	}
	size, err := strconv.Atoi(sizeV.s)
	if err != nil || size != len(body.s) {
		d.fatalf("UID %d: RFC822.SIZE %q but BODY[] has %d bytes", f.uid, sizeV.s, len(body.s))
	}
	if old, ok := d.bodySize[f.uid]; ok && old != size {
		d.fatalf("UID %d: BODY[] of %d bytes, earlier %d", f.uid, size, old)
	}
	d.bodySize[f.uid] = size
	header, _, _ := strings.Cut(body.s, "\r\n\r\n")
	g := ccMessageIDRE.FindStringSubmatch(header)
	if g == nil {
		d.fatalf("UID %d: BODY[] without the test's Message-ID: %s", f.uid, ccShort(body.s))
	}
	id, _ := strconv.Atoi(g[1])
	d.checkID(f.uid, id, "BODY[]")
	m := d.msgs[id]
	if !m.encrypted {
		if body.s != string(m.raw) {
			d.fatalf("UID %d (plain message %d): BODY[] differs from what was appended:\nserved %s\nwant   %s", f.uid, id, ccShort(body.s), ccShort(string(m.raw)))
		}
		return
	}
	if !ccStatusRE.MatchString(header) || strings.Contains(strings.ToLower(header), "application/pkcs7-mime") {
		d.fatalf("UID %d (encrypted message %d) not served decrypted (expunged by the other session: an EXPUNGE for it came in this reply: %v): %s",
			f.uid, id, d.gone[f.uid], ccShort(f.raw))
	}
	d.checkMarkers(body.s, id, "BODY[]", f)
	if !strings.HasSuffix(body.s, "\r\n\r\n"+string(m.text)) {
		d.fatalf("UID %d (encrypted message %d): served body is not the plaintext %s: %s", f.uid, id, ccShort(string(m.text)), ccShort(body.s))
	}
	if !d.decrypted[f.uid] && d.phoneBusy.Load() {
		d.decryptedWhileBusy++
	}
	d.decrypted[f.uid] = true
}

// checkText checks a served BODY[TEXT] and ENVELOPE.
func (d *ccDesktop) checkText(f *ccFetch) {
	d.t.Helper()
	text, env := f.items["BODY[TEXT]"], f.items["ENVELOPE"]
	if text.isNil || env.isNil || text.s == "" {
		d.legit["BODY[TEXT] or ENVELOPE NIL or empty"]++
		why := fmt.Sprintf("step %d: %q served BODY[TEXT] or ENVELOPE NIL or empty: %s", d.step, ccFirstLine(d.cmd), ccShort(f.raw))
		if f.uid == 0 {
			// A sequence-number FETCH: no EXPUNGE came during it, the position is still the message's.
			d.doomed[f.seq-1] = why
			return
		}
		d.mustBeGon[f.uid] = why
		return
	}
	d.texts++
	g := ccMessageIDRE.FindStringSubmatch(env.s)
	if g == nil {
		d.fatalf("ENVELOPE without the test's Message-ID: %s", ccShort(f.raw))
	}
	id, _ := strconv.Atoi(g[1])
	d.checkID(f.uid, id, "ENVELOPE")
	d.checkMarkers(text.s, id, "BODY[TEXT]", f)
	if m := d.msgs[id]; text.s != string(m.text) {
		d.fatalf("sequence number %d, UID %d (message %d, encrypted %v): BODY[TEXT] is not the plaintext:\nserved %s\nwant   %s",
			f.seq, f.uid, id, m.encrypted, ccShort(text.s), ccShort(string(m.text)))
	}
	if f.uid != 0 {
		if old, ok := d.textSize[f.uid]; ok && old != len(text.s) {
			d.fatalf("UID %d: BODY[TEXT] of %d bytes, earlier %d", f.uid, len(text.s), old)
		}
		d.textSize[f.uid] = len(text.s)
	}
}

// idle runs IDLE for about 100 ms, reading what comes meanwhile.
func (d *ccDesktop) idle() *ccReply {
	d.t.Helper()
	d.cmd = "IDLE"
	d.w.n++
	tag := fmt.Sprintf("t%d", d.w.n)
	d.w.send(tag + " IDLE\r\n")
	rep := &ccReply{}
	for {
		resp := d.w.readResponse()
		if strings.HasPrefix(resp, "+") {
			break
		}
		if !strings.HasPrefix(resp, "* ") {
			d.fatalf("IDLE refused: %s", ccShort(resp))
		}
		d.apply(resp, rep)
	}
	end := time.Now().Add(100 * time.Millisecond)
	for {
		// Wait for the first byte of a response with a ccShort deadline (Peek consumes nothing when it times
		// out), then read the whole response.
		d.w.c.SetReadDeadline(end)
		if _, err := d.w.br.Peek(1); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			d.fatalf("reading during IDLE: %v", err)
		}
		resp := d.w.readResponse()
		if !strings.HasPrefix(resp, "* ") {
			d.fatalf("during IDLE: %s", ccShort(resp))
		}
		d.apply(resp, rep)
	}
	d.w.send("DONE\r\n")
	more := d.readReply(tag)
	more.fetches = append(rep.fetches, more.fetches...)
	more.expunges += rep.expunges
	return more
}

// operation runs one randomly chosen client operation and its checks.
func (d *ccDesktop) operation() {
	d.t.Helper()
	count := len(d.uids)
	if count == 0 {
		d.run("NOOP")
		return
	}
	switch d.rng.IntN(9) {
	case 0:
		d.run("NOOP")
	case 1:
		before := slices.Clone(d.uids)
		rep := d.run("FETCH 1:* (UID FLAGS)")
		d.checkCovered(rep, before, "FLAGS")
	case 2:
		before := slices.Clone(d.uids)
		rep := d.run("UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])")
		d.checkCovered(rep, before, "BODY[]")
		for _, f := range rep.fetches {
			if _, ok := f.items["BODY[]"]; ok {
				if _, ok := f.items["UID"]; !ok {
					d.fatalf("UID FETCH response without UID for sequence number %d", f.seq)
				}
				d.checkBody(f)
			}
		}
	case 3:
		seq := 1 + d.rng.IntN(count)
		withUID := d.rng.IntN(2) == 0
		cmd := fmt.Sprintf("FETCH %d (BODY.PEEK[TEXT] ENVELOPE)", seq)
		if withUID {
			cmd = fmt.Sprintf("FETCH %d (UID BODY.PEEK[TEXT] ENVELOPE)", seq)
		}
		rep := d.run(cmd)
		var got *ccFetch
		for _, f := range rep.fetches {
			if _, ok := f.items["BODY[TEXT]"]; !ok {
				continue
			}
			if f.seq != seq || got != nil {
				d.fatalf("FETCH response with BODY[TEXT] for sequence number %d (asked for %d, once)", f.seq, seq)
			}
			if _, hasUID := f.items["UID"]; hasUID != withUID {
				d.fatalf("FETCH response for sequence number %d has UID %v, asked for it %v (the relay's added UID leaked or the client's was lost)", f.seq, hasUID, withUID)
			}
			got = f
		}
		if got == nil {
			if !rep.expungeIssued() {
				d.fatalf("no FETCH response for sequence number %d and no EXPUNGEISSUED: tagged %s", seq, ccShort(rep.tagged))
			}
			// No EXPUNGE comes during a sequence-number FETCH: the position is still the message's.
			why := fmt.Sprintf("step %d: %q left it out (%s)", d.step, ccFirstLine(d.cmd), ccShort(rep.tagged))
			if u := d.uids[seq-1]; u != 0 {
				d.mustBeGon[u] = why
			} else {
				d.doomed[seq-1] = why
			}
			return
		}
		d.checkText(got)
	case 4:
		// A message the client knows (its UID and its content) is looked for by its body marker.
		var cand []int
		for i, u := range d.uids {
			if _, ok := d.uidID[u]; ok && u != 0 {
				cand = append(cand, i)
			}
		}
		if len(cand) == 0 {
			d.run("NOOP")
			return
		}
		uid := d.uids[cand[d.rng.IntN(len(cand))]]
		id := d.uidID[uid]
		rep := d.run(fmt.Sprintf(`SEARCH BODY "%s"`, ccMarker(id)))
		d.searches++
		if d.msgs[id].encrypted {
			d.encSearches++
		}
		if !rep.searched {
			d.fatalf("no SEARCH response: tagged %s", ccShort(rep.tagged))
		}
		if len(rep.hits) > 1 {
			d.fatalf("marker of message %d (UID %d) found in %d messages: %v", id, uid, len(rep.hits), rep.hits)
		}
		if len(rep.hits) == 0 {
			d.legit["SEARCH found nothing"]++
			d.mustBeGon[uid] = fmt.Sprintf("step %d: %q found nothing (message %d, encrypted %v)", d.step, d.cmd, id, d.msgs[id].encrypted)
			return
		}
		seq, atUID := rep.hits[0][0], uint32(rep.hits[0][1])
		if atUID != 0 && atUID != uid {
			d.fatalf("marker of message %d (UID %d) found at sequence number %d, which the client's model says is UID %d", id, uid, seq, atUID)
		}
		if atUID == 0 {
			d.fatalf("marker of message %d (UID %d, sequence number %d in the client's model) found at sequence number %d, whose UID the client never learned",
				id, uid, slices.Index(d.uids, uid)+1, seq)
		}
	case 5:
		seq := 1 + d.rng.IntN(count)
		flag := []string{`\Flagged`, `$Desk`}[d.rng.IntN(2)]
		add := d.rng.IntN(2) == 0
		sign := "-"
		if add {
			sign = "+"
		}
		before := d.flags[seq-1]
		rep := d.run(fmt.Sprintf("STORE %d %sFLAGS (%s)", seq, sign, flag))
		if rep.expungeIssued() || rep.expunges > 0 {
			return
		}
		// Only this client changes these flags: the last FLAGS sent for seq reflects the STORE. Dovecot
		// sends none when the flag was already so; then the FLAGS the client knew must say so.
		var last *ccFetch
		for _, f := range rep.fetches {
			if _, ok := f.items["FLAGS"]; ok && f.seq == seq {
				last = f
			}
		}
		has := func(list string) bool { return slices.Contains(strings.Fields(strings.Trim(list, "()")), flag) }
		if last == nil {
			if before != "" && has(before) != add {
				d.fatalf("no FETCH FLAGS response for sequence number %d, whose FLAGS were %s: tagged %s", seq, before, ccShort(rep.tagged))
			}
			return
		}
		if has(last.items["FLAGS"].s) != add {
			d.fatalf("after %sFLAGS (%s) the FLAGS of sequence number %d are %s", sign, flag, seq, last.items["FLAGS"].s)
		}
	case 6:
		d.idle()
	case 7, 8:
		// New mail, as clients fetch it: everything above the highest UID the client knows.
		var top uint32
		for _, u := range d.uids {
			top = max(top, u)
		}
		rep := d.run(fmt.Sprintf("UID FETCH %d:* (UID RFC822.SIZE BODY.PEEK[])", top+1))
		for _, f := range rep.fetches {
			if _, ok := f.items["BODY[]"]; ok {
				d.checkBody(f)
			}
		}
	}
}

// TestConcurrentSessionConsistency: a client session through the proxy (decryption on) works on INBOX while
// another session, connected directly to Dovecot, appends (half of it S/MIME-encrypted), changes flags and
// expunges (some messages right after they arrived). The client (NOOP, FETCH 1:*, UID FETCH 1:* and n:* with
// BODY[], FETCH of BODY[TEXT] and ENVELOPE, SEARCH BODY, STORE, IDLE) keeps the sequence number -> UID model
// from what it is sent and requires every response to agree with it (sequence numbers within the count, UIDs
// fixed and ascending, EXISTS never below the count, no BAD or SERVERBUG), every body to be the right
// message's (decrypted when encrypted, with RFC822.SIZE its length and the same size every time), SEARCH BODY
// to find the right message, and, at the end, the same UIDs as the server. What a server may leave out or
// send as NIL for a message another session expunged must be about a message that is gone at the end.
func TestConcurrentSessionConsistency(t *testing.T) {
	start := time.Now()
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	rw, certPEM := smimeRewriter(t, "alice")
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	msgs := ccMessages(t, ccInitial+ccOps, cert)
	addr, _ := startProxy(t, d, rw)

	conn, err := ccDial(d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.c.Close() })
	ph := &ccPhone{conn: conn, rng: rand.New(rand.NewPCG(1, 2)), msgs: msgs, appendUID: map[uint32]int{}}
	out, err := conn.do("LOGIN alice alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	caps := strings.Join(out, "")
	if !strings.Contains(caps, "LITERAL+") {
		t.Fatalf("Dovecot does not offer LITERAL+: %q", caps)
	}
	ph.uidplus = strings.Contains(caps, "UIDPLUS")
	if _, err := conn.do("SELECT INBOX"); err != nil {
		t.Fatal(err)
	}
	for range ccInitial {
		if _, err := ph.appendNext(); err != nil {
			t.Fatal(err)
		}
	}

	busy := &atomic.Bool{}
	dk := &ccDesktop{t: t, w: wireDial(t, addr), rng: rand.New(rand.NewPCG(3, 4)), msgs: msgs, gone: map[uint32]bool{},
		uidID: map[uint32]int{}, bodySize: map[uint32]int{}, textSize: map[uint32]int{}, mustBeGon: map[uint32]string{},
		decrypted: map[uint32]bool{}, phoneBusy: busy, legit: map[string]int{}}
	dk.run("LOGIN alice alice-pw")
	dk.run("SELECT INBOX")
	if len(dk.uids) != ccInitial {
		t.Fatalf("SELECT INBOX: %d messages, want %d", len(dk.uids), ccInitial)
	}
	dk.run("FETCH 1:* (UID FLAGS)")

	clientStart := time.Now()
	deadline := clientStart.Add(ccDuration)
	stop := make(chan struct{})
	phoneErr := make(chan error, 1)
	busy.Store(true)
	go func() {
		defer busy.Store(false)
		phoneErr <- ph.run(deadline, stop)
	}()
	phoneDone := false
	var perr error
	defer func() {
		if !phoneDone { // the client failed: stop the direct session, unblocking it if it hangs
			close(stop)
			select {
			case <-phoneErr:
			case <-time.After(5 * time.Second):
				conn.c.Close()
				<-phoneErr
			}
		}
	}()
	ops := 0
	for ; ops < ccOps && time.Now().Before(deadline); ops++ {
		dk.step = ops
		dk.operation()
		select {
		case perr = <-phoneErr:
			phoneDone = true
			if perr != nil {
				t.Fatalf("the direct session failed: %v", perr)
			}
		default:
		}
	}
	clientTime := time.Since(clientStart)
	if !phoneDone {
		perr = <-phoneErr
		phoneDone = true
		if perr != nil {
			t.Fatalf("the direct session failed: %v", perr)
		}
	}

	// The end: the direct session is quiet; both views must agree.
	dk.step = ops
	dk.run("NOOP")
	rep := dk.run("UID FETCH 1:* (UID)")
	var final []uint32
	for _, f := range rep.fetches {
		if _, ok := f.items["UID"]; !ok {
			continue
		}
		if len(final) != f.seq-1 {
			dk.fatalf("FETCH responses not one per message in order: sequence number %d after %d", f.seq, len(final))
		}
		final = append(final, f.uid)
	}
	if !slices.Equal(final, dk.uids) {
		dk.fatalf("the client's model %v differs from the UIDs it was just sent %v", dk.uids, final)
	}
	out, err = conn.do("UID SEARCH ALL")
	if err != nil {
		t.Fatal(err)
	}
	var server []uint32
	for _, r := range out {
		if strings.HasPrefix(r, "* SEARCH") {
			for _, f := range strings.Fields(strings.TrimPrefix(r, "* SEARCH")) {
				n, _ := strconv.ParseUint(f, 10, 32)
				server = append(server, uint32(n))
			}
		}
	}
	if !slices.Equal(final, server) {
		t.Fatalf("through the proxy the mailbox holds UIDs %v, directly %v", final, server)
	}
	// What the content said each UID is must be what APPENDUID said.
	for uid, id := range dk.uidID {
		if want, ok := ph.appendUID[uid]; !ok || want != id {
			t.Errorf("UID %d was served as message %d; APPENDUID said message %d (known %v)", uid, id, want, ok)
		}
	}
	for uid, why := range dk.mustBeGon {
		if slices.Contains(final, uid) {
			t.Errorf("UID %d is still in the mailbox, yet %s", uid, why)
		}
	}
	for i, why := range dk.doomed {
		if why != "" {
			t.Errorf("UID %d is still in the mailbox, yet %s", final[i], why)
		}
	}
	if dk.decryptedWhileBusy < ccMinCrypt {
		t.Errorf("only %d encrypted messages were fetched decrypted while the direct session was busy, want at least %d", dk.decryptedWhileBusy, ccMinCrypt)
	}
	t.Logf("client: %d operations in %v (%d BODY[] checked, %d BODY[TEXT], %d SEARCH (%d for encrypted messages), %d encrypted messages decrypted, %d of them while the direct session was busy); direct session: %d appends, %d flag changes, %d EXPUNGE, %d UID EXPUNGE; %d messages at the end; tolerated: %v; %v in all",
		ops, clientTime.Round(time.Millisecond), dk.bodies, dk.texts, dk.searches, dk.encSearches, len(dk.decrypted), dk.decryptedWhileBusy,
		ph.appends-ccInitial, ph.flagOps, ph.expunges, ph.uidExpunges, len(final), dk.legit, time.Since(start).Round(time.Millisecond))
}
