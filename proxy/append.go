package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/backend"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/internal/rewriting"
)

// APPEND through the relay (RFC 9051 section 6.3.12, RFC 3502 MULTIAPPEND, RFC 4469 CATENATE, RFC 3516
// literal8): the command streams upstream as the client sends it, and each message literal passes the APPEND
// guard on the way. The guard peeks at the message's header (at most maxHeaderPeek bytes); with
// Options.EncryptAppends off (`serve --encrypt-appends=false`), a message without a status field streams byte
// for byte. Otherwise it is read whole and:
//   - an unmodified decrypted copy this process served (AppendGuard.Origin verifies a marker bound to the
//     served bytes), appended alone, becomes an upstream UID COPY of the original ciphertext (over a side
//     connection) when that message is in the selected mailbox; an edited copy is new content;
//   - any other message claiming to be decrypted (ServedPlaintext), and with EncryptAppends every message, is
//     encrypted to the user's own certificates (EncryptAppend);
//   - other status fields (an undecryptable copy, a forgery) are removed, giving back the original bytes.
//
// A user without a certificate (EncryptAppend fails with ErrNoCertificate) cannot have appends encrypted: a
// message that claims to be, or embeds (a forwarded attachment, AppendGuard.EmbedsServedPlaintext),
// a decrypted copy is refused; any other message is stored as sent, so that drafts of new plain mail still
// save. Every other failure to encrypt (the key store unreachable) refuses the APPEND.
//
// When a message can be neither copied nor encrypted the APPEND is refused with NO [CANNOT]: plaintext the
// proxy served never reaches the upstream server. A MULTIAPPEND whose earlier messages were already sent is
// then ended with a syntax error, so the server stores none of them (RFC 3502 section 6.3.11 atomicity).
// CATENATE TEXT parts (fragments, not whole messages) are refused when they carry a status field or
// EncryptAppends is on; URL parts copy ciphertext on the server.

// maxHeaderPeek bounds how much of a message literal is read to find the end of its header.
const maxHeaderPeek = 256 << 10

// errAppendRefused ends an APPEND the relay answered itself (refused, or stored as a copy).
var errAppendRefused = errors.New("proxy: append refused")

// ErrNoCertificate is returned (wrapped) by AppendGuard.EncryptAppend when the user has no certificate to
// encrypt to. The relay then stores a message that shows no sign of being decrypted plaintext as sent, and
// refuses one that does; any other EncryptAppend error refuses the APPEND.
var ErrNoCertificate = rewriting.ErrNoCertificate

const refusedText = "NO [CANNOT] smimeproxy will not store this message unencrypted upstream and cannot encrypt it (no certificate of yours in the key store?)"

// defaultMaxAppend bounds a message read whole when the guard does not say (AppendGuard.MaxAppendBytes).
const defaultMaxAppend = 64 << 20

// maxAppend is the largest message literal the relay reads whole.
func maxAppend(g AppendGuard) int64 {
	if n := g.MaxAppendBytes(); n > 0 {
		return n
	}
	return defaultMaxAppend
}

// tooBigText refuses a message too large to read whole (RFC 5530 section 3, TOOBIG).
func tooBigText(limit int64) string {
	return fmt.Sprintf("NO [TOOBIG] Message too large: smimeproxy encrypts appended messages in memory and accepts at most %d bytes", limit)
}

// appendState is one APPEND command on its way upstream.
type appendState struct {
	c       *command
	guard   AppendGuard
	pending []byte // complete lines (and small literals) not yet written upstream
	started bool   // something was written upstream
	nmsg    int    // message literals seen
	mailbox []byte
	refusal string // the tagged NO when refused; refusedText when empty
}

// appendCmd relays an APPEND command whose first line is line.
func (r *relay) appendCmd(tag string, line []byte) error {
	a := &appendState{c: newCommand(tag, "APPEND")}
	a.guard = r.srv.opts.AppendGuard
	first := true
	for {
		m, ok := literalAt(line)
		if !ok {
			a.pending = append(a.pending, line...)
			break
		}
		kind := literalKind(line, m, first)
		first = false
		if kind != "message" {
			if m.size > maxCommandLiteral {
				return r.refuseAppendRest(a, line, m, "BAD Literal too large")
			}
			if !m.nonSync {
				if err := r.send([]byte("+ OK\r\n")); err != nil {
					return err
				}
			}
			a.pending = append(a.pending, line...)
			var err error
			if a.pending, err = appendN(a.pending, r.cr, m.size); err != nil {
				return err
			}
			if kind == "mailbox" {
				a.mailbox = a.pending[len(a.pending)-int(m.size):]
			}
		} else {
			if a.mailbox == nil {
				a.mailbox = appendMailbox(line)
			}
			next, err := r.appendMessage(a, line, m, kind)
			if errors.Is(err, errAppendRefused) {
				return nil
			}
			if err != nil {
				return err
			}
			if next != nil {
				line = next
				continue
			}
		}
		var err error
		if line, err = readLine(r.cr); err != nil {
			return err
		}
	}
	if !a.started {
		r.addPending(a.c)
	}
	return r.writeUpstream(a.c, a.pending)
}

// literalKind tells what a literal of an APPEND command holds: "mailbox" (the first argument), "url" (a
// CATENATE URL), "text" (a CATENATE TEXT part) or "message".
func literalKind(line []byte, m litMarker, first bool) string {
	before := bytes.ToUpper(bytes.TrimRight(line[:m.at], " "))
	if first {
		s := &scanner{b: line[:m.at]}
		n := 0
		for {
			t, err := s.next()
			if err != nil || t.kind == tokEOF || t.kind == tokEOL {
				break
			}
			n++
		}
		if n == 2 { // tag APPEND {n}
			return "mailbox"
		}
	}
	switch {
	case bytes.HasSuffix(before, []byte("URL")):
		return "url"
	case bytes.HasSuffix(before, []byte("TEXT")):
		return "text"
	}
	return "message"
}

// appendMailbox returns the mailbox argument of an APPEND first line.
func appendMailbox(line []byte) []byte {
	s := &scanner{b: line}
	s.next()
	s.next()
	t, err := s.next()
	if err != nil {
		return nil
	}
	v, _ := astring(t)
	return v
}

// appendMessage relays one message literal announced by m at the end of line. When it had to read the line
// after the literal, it returns that line.
func (r *relay) appendMessage(a *appendState, line []byte, m litMarker, kind string) ([]byte, error) {
	a.nmsg++
	// Refused before a byte of it is read (a synchronizing literal is then never sent): it would be read
	// whole to be encrypted.
	if a.guard != nil && r.srv.opts.EncryptAppends && kind != "text" && m.size > maxAppend(a.guard) {
		a.refusal = tooBigText(maxAppend(a.guard))
		return nil, r.refuseAppendRest(a, line, m, a.refusal)
	}
	if !m.nonSync {
		if err := r.send([]byte("+ OK\r\n")); err != nil {
			return nil, err
		}
	}
	lr := io.LimitReader(r.cr, m.size)
	if a.guard == nil {
		return nil, r.appendStream(a, line[:m.at], m, nil, lr)
	}
	head, err := peekHeader(lr)
	if err != nil {
		return nil, err
	}
	if kind == "text" {
		if a.guard.NeedsStrip(head) || r.srv.opts.EncryptAppends {
			return nil, r.refuseAppend(a, m, int64(len(head)))
		}
		return nil, r.appendStream(a, line[:m.at], m, head, lr)
	}
	if !a.guard.NeedsStrip(head) && !r.srv.opts.EncryptAppends {
		return nil, r.appendStream(a, line[:m.at], m, head, lr)
	}
	if m.size > maxAppend(a.guard) {
		a.refusal = tooBigText(maxAppend(a.guard))
		return nil, r.refuseAppend(a, m, int64(len(head)))
	}
	rest, err := io.ReadAll(lr)
	if err != nil {
		return nil, err
	}
	if int64(len(head)+len(rest)) != m.size {
		return nil, io.ErrUnexpectedEOF
	}
	msg := append(head, rest...)
	if ref, ok := a.guard.Origin(r.userName(), msg); ok && a.nmsg == 1 && !a.started && r.rewriting() {
		sel := r.selected()
		if sel.ok && ref.Mailbox == sel.name && ref.UIDValidity == sel.uidValidity {
			next, err := readLine(r.cr)
			if err != nil {
				return nil, err
			}
			if len(trimEOL(next)) == 0 {
				done, err := r.appendAsCopy(a, sel, ref.UID)
				if err != nil {
					return nil, err
				}
				if done {
					return nil, errAppendRefused // answered
				}
			}
			// Not a lone message, or the copy failed: encrypt instead, then go on with next.
			return next, r.appendTransformed(a, line, m, msg, head, true)
		}
	}
	return nil, r.appendTransformed(a, line, m, msg, head, false)
}

// appendTransformed sends msg after removing status fields and, when needed, encrypting it. lineRead says
// that the line after the literal was already consumed by the caller.
func (r *relay) appendTransformed(a *appendState, line []byte, m litMarker, msg, head []byte, lineRead bool) error {
	served := a.guard.ServedPlaintext(head)
	stripped := a.guard.StripStatus(msg)
	if served || r.srv.opts.EncryptAppends {
		enc, err := a.guard.EncryptAppend(r.ctx, r.userName(), stripped)
		switch {
		case err == nil:
			stripped = enc
		case errors.Is(err, ErrNoCertificate) && !served && !a.guard.EmbedsServedPlaintext(msg):
			r.log.Info("append stored unencrypted: the user has no certificate to encrypt to")
		default:
			r.log.Warn("append refused: cannot encrypt", "err", err)
			if lineRead {
				return r.refuseStarted(a)
			}
			return r.refuseAppend(a, m, m.size)
		}
	}
	msg = stripped
	m.size = int64(len(msg))
	return r.appendStream(a, line[:m.at], m, msg, eofReader{})
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// appendStream writes what is pending, the literal announcement (prefix, m), head and the rest of the
// literal from rest upstream.
func (r *relay) appendStream(a *appendState, prefix []byte, m litMarker, head []byte, rest io.Reader) error {
	if !a.started {
		r.addPending(a.c)
		a.started = true
	}
	if len(a.pending) > 0 {
		if err := r.writeUpstream(a.c, a.pending); err != nil {
			return err
		}
		a.pending = nil
	}
	sent, err := r.writeLiteralMarker(a.c, prefix, m)
	if err != nil {
		return err
	}
	if !sent {
		// Refused by the server: drop the client's literal and the rest of its command.
		if _, err := io.Copy(io.Discard, rest); err != nil {
			return err
		}
		if err := r.drainCommand(); err != nil {
			return err
		}
		return errAppendRefused
	}
	if _, err := r.upw.Write(head); err != nil {
		return err
	}
	n, err := io.Copy(r.upw, rest)
	if err != nil {
		return err
	}
	if int64(len(head))+n != m.size {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// refuseAppend drops the rest of the message literal (read bytes of m.size so far) and of the command and
// refuses the APPEND.
func (r *relay) refuseAppend(a *appendState, m litMarker, read int64) error {
	if _, err := io.CopyN(io.Discard, r.cr, m.size-read); err != nil {
		return err
	}
	if err := r.drainCommand(); err != nil {
		return err
	}
	return r.refuseStarted(a)
}

// refuseAppendRest refuses an APPEND at a literal that is too large to hold.
func (r *relay) refuseAppendRest(a *appendState, line []byte, m litMarker, text string) error {
	if m.nonSync {
		if _, err := io.CopyN(io.Discard, r.cr, m.size); err != nil {
			return err
		}
		if err := r.drainCommand(); err != nil {
			return err
		}
	}
	if a.started {
		return r.refuseStarted(a)
	}
	if err := r.local(a.c.tag, text); err != nil {
		return err
	}
	return errAppendRefused
}

// refuseStarted answers NO [CANNOT]. When part of the command is already upstream, the command is ended with
// a syntax error, so that the server stores nothing, and its tagged response is replaced.
func (r *relay) refuseStarted(a *appendState) error {
	text := refusedText
	if a.refusal != "" {
		text = a.refusal
	}
	if !a.started {
		if err := r.local(a.c.tag, text); err != nil {
			return err
		}
		return errAppendRefused
	}
	a.c.tagged = func([]byte) []byte { return []byte(a.c.tag + " " + text + "\r\n") }
	if _, err := r.upw.WriteString(" )\r\n"); err != nil {
		return err
	}
	if err := r.upw.Flush(); err != nil {
		return err
	}
	return errAppendRefused
}

// drainCommand reads and drops the rest of a command (lines and literals; synchronizing literals get no
// continuation request, so a client that waits for one sends nothing more).
func (r *relay) drainCommand() error {
	for {
		line, err := readLine(r.cr)
		if err != nil {
			return err
		}
		m, ok := literalAt(line)
		if !ok {
			return nil
		}
		if !m.nonSync {
			return nil
		}
		if _, err := io.CopyN(io.Discard, r.cr, m.size); err != nil {
			return err
		}
	}
}

// appendAsCopy stores the original ciphertext of uid (selected mailbox sel) in the APPEND's mailbox with an
// upstream UID COPY over a side connection, and answers the APPEND with the new UID (RFC 4315 APPENDUID from
// COPYUID). It reports false when the copy did not happen (the caller encrypts instead).
func (r *relay) appendAsCopy(a *appendState, sel mailboxRef, uid uint32) (bool, error) {
	dest := r.mailboxRef(a.mailbox, 1)
	if !dest.ok {
		return false, nil
	}
	var data *imap.CopyData
	err := r.side.do(r.ctx, sel, func(c *backend.Conn) error {
		var err error
		data, err = c.Client.Copy(imap.UIDSetNum(imap.UID(uid)), dest.name).Wait()
		return err
	})
	if err != nil || data == nil || data.UIDValidity == 0 {
		r.log.Info("copy of the original ciphertext failed; encrypting instead", "err", err)
		return false, nil
	}
	uids, ok := data.DestUIDs.Nums()
	if !ok || len(uids) != 1 {
		return false, nil
	}
	r.log.Info("append of a served message stored as a copy of its ciphertext", "uid", uid)
	// The client's session learns of the new message the way an APPEND would tell it (EXISTS before the
	// tagged OK): a NOOP under the APPEND's tag, whose tagged response becomes the APPEND's.
	done := fmt.Sprintf("%s OK [APPENDUID %d %d] Append completed (copy of the original ciphertext)\r\n", a.c.tag, data.UIDValidity, uids[0])
	a.c.tagged = func([]byte) []byte { return []byte(done) }
	return true, r.forward(a.c, unit(a.c.tag+" NOOP\r\n"))
}

// peekHeader reads r up to and including the empty line that ends the header (mimepart.HeaderComplete, the
// rule every reader of the message uses), at most maxHeaderPeek bytes; the bytes read are returned and must be
// sent before the rest of r.
func peekHeader(r io.Reader) ([]byte, error) {
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 4096)
	for len(buf) < maxHeaderPeek {
		n, err := r.Read(chunk[:min(len(chunk), maxHeaderPeek-len(buf))])
		buf = append(buf, chunk[:n]...)
		if mimepart.HeaderComplete(buf) {
			return buf, nil
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}
