package demo

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests speak raw IMAP to the demo's upstream server alone (no proxy in front) and check what a client
// sees on the wire: one EXPUNGE per removed message with the sequence numbers of the client's view (RFC 9051
// section 7.5.1), MOVE as RFC 6851 says (COPYUID first, then the EXPUNGEs), COPY as RFC 4315 says.

// startTestUpstream serves n plain messages ("Subject: message i", UIDs 1..n) in INBOX and an empty Trash
// through the demo's upstream server, and returns its address.
func startTestUpstream(t *testing.T, n int) string {
	t.Helper()
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = fmt.Appendf(nil, "From: a@example.com\r\nSubject: message %d\r\n\r\nbody %d\r\n", i+1, i+1)
	}
	d := &Demo{}
	if err := d.startUpstream(msgs, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c := dialIMAP(t, d.UpstreamAddr())
	c.ok("CREATE Trash")
	c.ok("LOGOUT")
	return d.UpstreamAddr()
}

// imapConn is a raw IMAP client: it sends commands verbatim and returns the server's responses as written.
type imapConn struct {
	t   *testing.T
	c   net.Conn
	r   *bufio.Reader
	tag int
}

// dialIMAP connects to addr and logs in as the demo user.
func dialIMAP(t *testing.T, addr string) *imapConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { nc.Close() })
	c := &imapConn{t: t, c: nc, r: bufio.NewReader(nc)}
	if g := c.readResponse(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	c.ok("LOGIN %s %s", DefaultUser, DefaultPassword)
	return c
}

var literalSuffix = regexp.MustCompile(`\{(\d+)\+?\}$`)

// readResponse reads one response line, with the literals it carries, without its final CRLF.
func (c *imapConn) readResponse() string {
	c.t.Helper()
	var b strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read: %v (so far %q)", err, b.String())
		}
		line = strings.TrimSuffix(line, "\r\n")
		b.WriteString(line)
		m := literalSuffix.FindStringSubmatch(line)
		if m == nil {
			return b.String()
		}
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			c.t.Fatalf("read literal: %v", err)
		}
		b.WriteString("\r\n")
		b.Write(buf)
	}
}

// cmd sends one command and returns the untagged responses before its tagged one, and the tagged one without
// the tag ("OK ...", "NO ...", "BAD ...").
func (c *imapConn) cmd(format string, args ...any) (untagged []string, status string) {
	c.t.Helper()
	c.tag++
	tag := "t" + strconv.Itoa(c.tag)
	line := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintf(c.c, "%s %s\r\n", tag, line); err != nil {
		c.t.Fatal(err)
	}
	for {
		resp := c.readResponse()
		if rest, ok := strings.CutPrefix(resp, tag+" "); ok {
			return untagged, rest
		}
		if !strings.HasPrefix(resp, "* ") {
			c.t.Fatalf("%s: unexpected response %q", line, resp)
		}
		untagged = append(untagged, resp)
	}
}

// ok runs a command that must succeed and returns its untagged responses.
func (c *imapConn) ok(format string, args ...any) []string {
	c.t.Helper()
	untagged, status := c.cmd(format, args...)
	if !strings.HasPrefix(status, "OK") {
		c.t.Fatalf("%s: %s (untagged %q)", fmt.Sprintf(format, args...), status, untagged)
	}
	return untagged
}

var (
	expungeResp = regexp.MustCompile(`^\* (\d+) EXPUNGE$`)
	existsResp  = regexp.MustCompile(`^\* (\d+) EXISTS$`)
	fetchUID    = regexp.MustCompile(`^\* (\d+) FETCH \(.*\bUID (\d+)`)
	copyUIDResp = regexp.MustCompile(`^\* OK \[COPYUID (\d+) (\S+) (\S+)\]`)
)

// expunges returns the sequence numbers of the EXPUNGE responses in resps, in order.
func expunges(resps []string) []uint32 {
	var seqs []uint32
	for _, r := range resps {
		if m := expungeResp.FindStringSubmatch(r); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 32)
			seqs = append(seqs, uint32(n))
		}
	}
	return seqs
}

// applyExpunges is what a client does with EXPUNGE responses: remove the message at each sequence number in
// turn from its view (UIDs by sequence number). It fails on a sequence number the view does not have.
func applyExpunges(t *testing.T, view []uint32, seqs []uint32) []uint32 {
	t.Helper()
	view = slices.Clone(view)
	for _, s := range seqs {
		if s < 1 || int(s) > len(view) {
			t.Fatalf("EXPUNGE %d with %d messages in the client's view", s, len(view))
		}
		view = slices.Delete(view, int(s)-1, int(s))
	}
	return view
}

// uids returns the UIDs of the selected mailbox by sequence number, checking the FETCH responses come for
// sequence numbers 1..n in order.
func (c *imapConn) uids() []uint32 {
	c.t.Helper()
	untagged, status := c.cmd("FETCH 1:* (UID)")
	var uids []uint32
	for _, r := range untagged {
		m := fetchUID.FindStringSubmatch(r)
		if m == nil {
			c.t.Fatalf("FETCH 1:* (UID): unexpected %q", r)
		}
		if m[1] != strconv.Itoa(len(uids)+1) {
			c.t.Fatalf("FETCH 1:* (UID): %q after %d messages", r, len(uids))
		}
		uid, _ := strconv.ParseUint(m[2], 10, 32)
		uids = append(uids, uint32(uid))
	}
	if !strings.HasPrefix(status, "OK") && len(uids) > 0 {
		c.t.Fatalf("FETCH 1:* (UID): %s", status)
	}
	return uids
}

// subjects returns the Subject of each message in mailbox, by sequence number.
func (c *imapConn) subjects(mailbox string) []string {
	c.t.Helper()
	c.ok("EXAMINE %s", mailbox)
	untagged, status := c.cmd("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	if !strings.HasPrefix(status, "OK") {
		return nil // empty mailbox
	}
	var subjects []string
	for _, r := range untagged {
		_, s, ok := strings.Cut(r, "Subject: ")
		if !ok {
			c.t.Fatalf("no subject in %q", r)
		}
		s, _, _ = strings.Cut(s, "\r\n")
		subjects = append(subjects, s)
	}
	return subjects
}

// checkMove checks the responses of a MOVE that moved the messages of srcUIDs: a COPYUID response for them
// before exactly one EXPUNGE each, with decreasing sequence numbers that take before to after.
func checkMove(t *testing.T, untagged []string, before, after []uint32, srcUIDs string) {
	t.Helper()
	seqs := expunges(untagged)
	if want := len(before) - len(after); len(seqs) != want {
		t.Fatalf("%d EXPUNGE responses %v, want %d:\n%s", len(seqs), seqs, want, strings.Join(untagged, "\n"))
	}
	if !slices.IsSortedFunc(seqs, func(a, b uint32) int { return int(b) - int(a) }) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
		t.Errorf("EXPUNGE sequence numbers %v do not decrease", seqs)
	}
	if got := applyExpunges(t, before, seqs); !slices.Equal(got, after) {
		t.Errorf("after the EXPUNGEs the client's view is UIDs %v, the server's %v", got, after)
	}
	if len(untagged) == 0 {
		t.Fatal("no COPYUID response")
	}
	m := copyUIDResp.FindStringSubmatch(untagged[0])
	if m == nil {
		t.Fatalf("first response %q, want * OK [COPYUID ...] (RFC 6851 section 4.3)", untagged[0])
	}
	if m[2] != srcUIDs {
		t.Errorf("COPYUID source UIDs %s, want %s", m[2], srcUIDs)
	}
}

// TestUpstreamMoveOne: MOVE of one message out of three gives one EXPUNGE with its sequence number; the others
// keep their UIDs and the destination gets the message.
func TestUpstreamMoveOne(t *testing.T) {
	for seq := 1; seq <= 3; seq++ {
		t.Run(fmt.Sprintf("seq%d", seq), func(t *testing.T) {
			c := dialIMAP(t, startTestUpstream(t, 3))
			c.ok("SELECT INBOX")
			untagged := c.ok("MOVE %d Trash", seq)
			if got, want := expunges(untagged), []uint32{uint32(seq)}; !slices.Equal(got, want) {
				t.Errorf("EXPUNGE responses %v, want %v:\n%s", got, want, strings.Join(untagged, "\n"))
			}
			after := slices.DeleteFunc([]uint32{1, 2, 3}, func(u uint32) bool { return u == uint32(seq) })
			checkMove(t, untagged, []uint32{1, 2, 3}, after, strconv.Itoa(seq))
			if got := c.uids(); !slices.Equal(got, after) {
				t.Errorf("INBOX UIDs %v, want %v", got, after)
			}
			if m := copyUIDResp.FindStringSubmatch(untagged[0]); m == nil || m[3] != "1" {
				t.Errorf("COPYUID %q, want destination UID 1", untagged[0])
			}
			if got, want := c.subjects("Trash"), []string{fmt.Sprintf("message %d", seq)}; !slices.Equal(got, want) {
				t.Errorf("Trash holds %q, want %q", got, want)
			}
			if got := len(c.subjects("INBOX")); got != 2 {
				t.Errorf("INBOX holds %d messages, want 2", got)
			}
		})
	}
}

// TestUpstreamMoveTwo: MOVE of two non-contiguous messages gives two EXPUNGEs with decreasing sequence
// numbers, by sequence number and by UID.
func TestUpstreamMoveTwo(t *testing.T) {
	for _, cmd := range []string{"MOVE 2,4 Trash", "UID MOVE 2,4 Trash", "UID MOVE 4,2 Trash"} {
		t.Run(cmd, func(t *testing.T) {
			c := dialIMAP(t, startTestUpstream(t, 5))
			c.ok("SELECT INBOX")
			untagged := c.ok("%s", cmd)
			if got, want := expunges(untagged), []uint32{4, 2}; !slices.Equal(got, want) {
				t.Errorf("EXPUNGE responses %v, want %v:\n%s", got, want, strings.Join(untagged, "\n"))
			}
			checkMove(t, untagged, []uint32{1, 2, 3, 4, 5}, []uint32{1, 3, 5}, "2,4")
			if m := copyUIDResp.FindStringSubmatch(untagged[0]); m == nil || m[3] != "1:2" {
				t.Errorf("COPYUID %q, want destination UIDs 1:2", untagged[0])
			}
			if got := c.uids(); !slices.Equal(got, []uint32{1, 3, 5}) {
				t.Errorf("INBOX UIDs %v, want [1 3 5]", got)
			}
			if got, want := c.subjects("Trash"), []string{"message 2", "message 4"}; !slices.Equal(got, want) {
				t.Errorf("Trash holds %q, want %q", got, want)
			}
		})
	}
}

// TestUpstreamMoveAll: MOVE 1:* empties the mailbox with one EXPUNGE per message.
func TestUpstreamMoveAll(t *testing.T) {
	c := dialIMAP(t, startTestUpstream(t, 3))
	c.ok("SELECT INBOX")
	untagged := c.ok("MOVE 1:* Trash")
	checkMove(t, untagged, []uint32{1, 2, 3}, nil, "1:3")
	if got := c.uids(); len(got) != 0 {
		t.Errorf("INBOX UIDs %v after MOVE 1:*", got)
	}
	if got := c.subjects("Trash"); len(got) != 3 {
		t.Errorf("Trash holds %q", got)
	}
}

// TestUpstreamMoveSessions: with other sessions on both mailboxes, each session gets the EXPUNGEs of the
// others' moves in its own numbering before its own, and the destination's sessions get EXISTS.
func TestUpstreamMoveSessions(t *testing.T) {
	addr := startTestUpstream(t, 4)
	a, b, trash := dialIMAP(t, addr), dialIMAP(t, addr), dialIMAP(t, addr)
	a.ok("SELECT INBOX")
	b.ok("SELECT INBOX")
	trash.ok("SELECT Trash")

	untagged := b.ok("UID MOVE 1 Trash")
	checkMove(t, untagged, []uint32{1, 2, 3, 4}, []uint32{2, 3, 4}, "1")

	// a has not heard of b's move: its message 2 is still UID 2.
	untagged = a.ok("MOVE 2 Trash")
	seqs := expunges(untagged)
	if want := []uint32{1, 1}; !slices.Equal(seqs, want) {
		t.Errorf("a: EXPUNGE responses %v, want %v (b's move, then its own):\n%s", seqs, want, strings.Join(untagged, "\n"))
	}
	if got := applyExpunges(t, []uint32{1, 2, 3, 4}, seqs); !slices.Equal(got, []uint32{3, 4}) {
		t.Errorf("a: view %v after the EXPUNGEs, want [3 4]", got)
	}
	if got := a.uids(); !slices.Equal(got, []uint32{3, 4}) {
		t.Errorf("a: INBOX UIDs %v, want [3 4]", got)
	}

	untagged = b.ok("NOOP")
	if seqs := expunges(untagged); !slices.Equal(seqs, []uint32{1}) {
		t.Errorf("b: EXPUNGE responses %v for a's move, want [1]:\n%s", seqs, strings.Join(untagged, "\n"))
	}
	if got := b.uids(); !slices.Equal(got, []uint32{3, 4}) {
		t.Errorf("b: INBOX UIDs %v, want [3 4]", got)
	}

	untagged = trash.ok("NOOP")
	var exists []string
	for _, r := range untagged {
		if m := existsResp.FindStringSubmatch(r); m != nil {
			exists = append(exists, m[1])
		} else if !strings.Contains(r, " FETCH ") {
			t.Errorf("trash: unexpected %q", r)
		}
	}
	if len(exists) == 0 || exists[len(exists)-1] != "2" {
		t.Errorf("trash: EXISTS %v, want it to end at 2", exists)
	}
	if got := trash.uids(); !slices.Equal(got, []uint32{1, 2}) {
		t.Errorf("trash: UIDs %v, want [1 2]", got)
	}
}

// TestUpstreamMoveCopyNothing: a UID MOVE or UID COPY matching no message is OK with no COPYUID and no
// EXPUNGE (RFC 9051 section 6.4.9), and the connection goes on.
func TestUpstreamMoveCopyNothing(t *testing.T) {
	c := dialIMAP(t, startTestUpstream(t, 2))
	c.ok("SELECT INBOX")
	for _, cmd := range []string{"UID MOVE 99 Trash", "UID COPY 99 Trash", "UID MOVE 5:9 Trash"} {
		untagged, status := c.cmd("%s", cmd)
		if !strings.HasPrefix(status, "OK") || len(untagged) != 0 {
			t.Errorf("%s: %q then %q, want a bare OK", cmd, untagged, status)
		}
		if untagged := c.ok("NOOP"); len(untagged) != 0 {
			t.Errorf("NOOP after %s: %q", cmd, untagged)
		}
	}
	if got := c.uids(); !slices.Equal(got, []uint32{1, 2}) {
		t.Errorf("INBOX UIDs %v, want [1 2]", got)
	}
}

// TestUpstreamMoveErrors: MOVE to a missing mailbox is NO [TRYCREATE] and changes nothing.
func TestUpstreamMoveErrors(t *testing.T) {
	c := dialIMAP(t, startTestUpstream(t, 2))
	c.ok("SELECT INBOX")
	untagged, status := c.cmd("MOVE 1 Nowhere")
	if !strings.HasPrefix(status, "NO [TRYCREATE]") || len(untagged) != 0 {
		t.Errorf("MOVE to a missing mailbox: %q then %q", untagged, status)
	}
	if got := c.uids(); !slices.Equal(got, []uint32{1, 2}) {
		t.Errorf("INBOX UIDs %v, want [1 2]", got)
	}
}

// TestUpstreamCopy: COPY reports COPYUID, expunges nothing, and the copies keep their flags.
func TestUpstreamCopy(t *testing.T) {
	c := dialIMAP(t, startTestUpstream(t, 3))
	c.ok("SELECT INBOX")
	c.ok(`STORE 3 +FLAGS.SILENT (\Flagged)`)
	untagged, status := c.cmd("COPY 1,3 Trash")
	if len(untagged) != 0 {
		t.Errorf("COPY: untagged %q", untagged)
	}
	// RFC 4315 section 3: COPYUID in the tagged OK of COPY.
	m := copyUIDResp.FindStringSubmatch("* " + status)
	if m == nil || m[2] != "1,3" || m[3] != "1:2" {
		t.Errorf("COPY: %q, want OK [COPYUID <validity> 1,3 1:2]", status)
	}
	if got := c.uids(); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Errorf("INBOX UIDs %v after COPY", got)
	}
	if got, want := c.subjects("Trash"), []string{"message 1", "message 3"}; !slices.Equal(got, want) {
		t.Errorf("Trash holds %q, want %q", got, want)
	}
	untagged = c.ok("FETCH 2 (FLAGS)")
	if len(untagged) != 1 || !strings.Contains(strings.ToLower(untagged[0]), `\flagged`) {
		t.Errorf("copy of a flagged message: %q", untagged)
	}
}

// TestUpstreamExpunge: EXPUNGE after STORE \Deleted reports each removed message once; UID EXPUNGE removes
// only the deleted messages of its set (RFC 4315 section 2.1).
func TestUpstreamExpunge(t *testing.T) {
	c := dialIMAP(t, startTestUpstream(t, 5))
	c.ok("SELECT INBOX")
	c.ok(`STORE 2,4 +FLAGS.SILENT (\Deleted)`)
	untagged := c.ok("EXPUNGE")
	seqs := expunges(untagged)
	if len(seqs) != 2 || len(untagged) != 2 {
		t.Fatalf("EXPUNGE: %q, want two EXPUNGE responses", untagged)
	}
	if got := applyExpunges(t, []uint32{1, 2, 3, 4, 5}, seqs); !slices.Equal(got, []uint32{1, 3, 5}) {
		t.Errorf("view %v after EXPUNGE, want [1 3 5]", got)
	}
	if got := c.uids(); !slices.Equal(got, []uint32{1, 3, 5}) {
		t.Errorf("UIDs %v after EXPUNGE, want [1 3 5]", got)
	}

	c.ok(`UID STORE 1,5 +FLAGS.SILENT (\Deleted)`)
	untagged = c.ok("UID EXPUNGE 5")
	if got := expunges(untagged); !slices.Equal(got, []uint32{3}) || len(untagged) != 1 {
		t.Errorf("UID EXPUNGE 5: %q, want * 3 EXPUNGE", untagged)
	}
	if got := c.uids(); !slices.Equal(got, []uint32{1, 3}) {
		t.Errorf("UIDs %v after UID EXPUNGE, want [1 3]", got)
	}
	if untagged := c.ok("NOOP"); len(untagged) != 0 {
		t.Errorf("NOOP: %q", untagged)
	}
}

// TestUpstreamSelectFlags: SELECT lists the system flags in FLAGS and PERMANENTFLAGS even when no message has
// one (RFC 9051 section 7.1: a flag missing from PERMANENTFLAGS cannot be stored; Thunderbird honours that).
func TestUpstreamSelectFlags(t *testing.T) {
	c := dialIMAP(t, startTestUpstream(t, 1))
	untagged := c.ok("SELECT INBOX")
	want := []string{
		`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)`,
		`* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Permanent flags`,
	}
	for _, w := range want {
		if !slices.Contains(untagged, w) {
			t.Errorf("SELECT lacks %q:\n%s", w, strings.Join(untagged, "\n"))
		}
	}
	c.ok(`STORE 1 +FLAGS.SILENT ($Forwarded \Seen)`)
	untagged = c.ok("SELECT INBOX")
	if w := `* FLAGS (\Answered \Flagged \Deleted \Seen \Draft $forwarded)`; !slices.Contains(untagged, w) {
		t.Errorf("SELECT with a keyword lacks %q:\n%s", w, strings.Join(untagged, "\n"))
	}
}

// TestUpstreamReadOnly: a mailbox opened with EXAMINE does not change (RFC 9051 section 6.3.3): FETCH BODY[]
// sets no \Seen, STORE and EXPUNGE are ignored, MOVE is refused, CLOSE expunges nothing.
func TestUpstreamReadOnly(t *testing.T) {
	c := dialIMAP(t, startTestUpstream(t, 2))
	c.ok("SELECT INBOX")
	c.ok(`STORE 1 +FLAGS.SILENT (\Deleted)`)
	untagged := c.ok("EXAMINE INBOX")
	if !slices.Contains(untagged, "* OK [PERMANENTFLAGS ()] Permanent flags") {
		t.Errorf("EXAMINE: PERMANENTFLAGS not empty:\n%s", strings.Join(untagged, "\n"))
	}
	untagged = c.ok("FETCH 2 BODY[]")
	if len(untagged) != 1 || strings.Contains(strings.ToLower(untagged[0]), `\seen`) {
		t.Errorf("FETCH BODY[] read-only: %q", untagged)
	}
	if untagged := c.ok("FETCH 2 (FLAGS)"); len(untagged) != 1 || !strings.HasSuffix(untagged[0], "FLAGS ())") {
		t.Errorf("FETCH BODY[] read-only set a flag: %q", untagged)
	}
	c.ok(`STORE 2 +FLAGS (\Flagged)`)
	if untagged := c.ok("FETCH 2 (FLAGS)"); len(untagged) != 1 || !strings.HasSuffix(untagged[0], "FLAGS ())") {
		t.Errorf("STORE read-only changed flags: %q", untagged)
	}
	if untagged := c.ok("EXPUNGE"); len(untagged) != 0 {
		t.Errorf("EXPUNGE read-only: %q", untagged)
	}
	if untagged, status := c.cmd("MOVE 1 Trash"); !strings.HasPrefix(status, "NO") || len(untagged) != 0 {
		t.Errorf("MOVE read-only: %q then %q, want NO", untagged, status)
	}
	c.ok("CLOSE")
	c.ok("SELECT INBOX")
	if got := c.uids(); !slices.Equal(got, []uint32{1, 2}) {
		t.Errorf("UIDs %v after the read-only session, want [1 2]", got)
	}
	if got := c.subjects("Trash"); len(got) != 0 {
		t.Errorf("Trash holds %q after a refused MOVE", got)
	}
}

// TestDemoMoveThroughProxy: what a new user's first client sees: through the demo's proxy, MOVE of one
// message gives exactly one EXPUNGE for it (Thunderbird dropped an untouched second message when the demo
// sent two), and the moved message arrives decrypted in the destination.
func TestDemoMoveThroughProxy(t *testing.T) {
	d := startDemo(t)
	c := dialIMAP(t, d.Addr()) // logged in
	c.ok("SELECT INBOX")
	before := c.uids()
	if len(before) < 2 {
		t.Fatalf("demo INBOX has %d messages", len(before))
	}
	c.ok("CREATE Archive")
	untagged := c.ok("MOVE 1 Archive")
	if got := expunges(untagged); len(got) != 1 || got[0] != 1 {
		t.Fatalf("MOVE 1 through the proxy: EXPUNGE responses %v, want [1] (all: %q)", got, untagged)
	}
	if after := c.uids(); len(after) != len(before)-1 || after[0] != before[1] {
		t.Errorf("INBOX UIDs after MOVE %v, before %v", after, before)
	}
	c.ok("SELECT Archive")
	body := strings.Join(c.ok("FETCH 1 (BODY.PEEK[])"), "")
	if !strings.Contains(body, "X-Smimeproxy-Status: decrypted") {
		t.Errorf("moved message not served decrypted: %.300q", body)
	}
}
