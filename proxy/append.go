package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/backend"
)

// maxHeaderPeek bounds how much of an APPEND literal is read to find the end of its header before deciding
// whether the message can stream upstream untouched. A header longer than this is inspected as far as it goes.
const maxHeaderPeek = 256 << 10

// Append serves APPEND (RFC 9051 section 6.3.12) with flags and internal date, returning the upstream's
// APPENDUID (RFC 4315 section 3).
//
// Without an AppendGuard, or for a message whose header carries no status field (the common case) and no
// --encrypt-appends, the literal streams upstream byte for byte. Otherwise the message is read whole and:
//   - a decrypted copy this process served (Origin) becomes an upstream UID COPY of the original ciphertext
//     when that message is in the selected mailbox;
//   - any other message claiming to be decrypted (ServedPlaintext), and with Options.EncryptAppends every
//     message, is encrypted to the user's own certificates (EncryptAppend); when that fails the APPEND is
//     refused with NO [CANNOT]: plaintext the proxy served never reaches the upstream server;
//   - other status fields (an undecryptable copy, a forgery) are removed, giving back the original bytes.
func (s *session) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (data *imap.AppendData, err error) {
	ctx, cancel := s.begin()
	defer s.end(&err, cancel)
	guard, _ := s.srv.opts.Rewriter.(AppendGuard)
	if guard == nil {
		return s.appendStream(ctx, mailbox, r.Size(), r, options)
	}
	head, err := peekHeader(r)
	if err != nil {
		return nil, fmt.Errorf("proxy: reading APPEND literal: %w", err)
	}
	if !guard.NeedsStrip(head) && !s.srv.opts.EncryptAppends {
		return s.appendStream(ctx, mailbox, r.Size(), io.MultiReader(bytes.NewReader(head), r), options)
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("proxy: reading APPEND literal: %w", err)
	}
	msg := append(head, rest...)
	if ref, ok := guard.Origin(s.user, head); ok && ref.Mailbox == s.mailbox && ref.UIDValidity == s.uidValidity && s.uidValidity != 0 {
		data, err := s.appendAsCopy(ctx, mailbox, imap.UID(ref.UID))
		if err == nil {
			s.log.Info("append of a served message stored as a copy of its ciphertext", "mailbox", mailbox, "uid", ref.UID)
			return data, nil
		}
		s.log.Info("copy of the original ciphertext failed; encrypting instead", "err", err)
	}
	msg = guard.StripStatus(msg)
	if guard.ServedPlaintext(head) || s.srv.opts.EncryptAppends {
		enc, err := guard.EncryptAppend(ctx, s.user, msg)
		if err != nil {
			s.log.Warn("append refused: cannot encrypt", "mailbox", mailbox, "err", err)
			return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
				Text: "smimeproxy will not store this message unencrypted upstream and cannot encrypt it (no certificate of yours in the key store?)"}
		}
		msg = enc
	}
	return s.appendStream(ctx, mailbox, int64(len(msg)), bytes.NewReader(msg), options)
}

// appendStream sends APPEND upstream with the literal read from r (size bytes).
func (s *session) appendStream(ctx context.Context, mailbox string, size int64, r io.Reader, options *imap.AppendOptions) (data *imap.AppendData, err error) {
	err = s.do(ctx, func(up *backend.Conn) error {
		cmd := up.Client.Append(mailbox, size, options)
		if _, err := io.Copy(cmd, r); err != nil {
			cmd.Close()
			return err
		}
		if err := cmd.Close(); err != nil {
			return err
		}
		data, err = cmd.Wait()
		return err
	})
	return data, err
}

// appendAsCopy copies uid of the selected mailbox to mailbox upstream (RFC 9051 section 6.4.7) and reports the
// new message's UID as APPENDUID (RFC 4315 section 3) from COPYUID.
func (s *session) appendAsCopy(ctx context.Context, mailbox string, uid imap.UID) (*imap.AppendData, error) {
	var cd *imap.CopyData
	err := s.do(ctx, func(up *backend.Conn) error {
		var err error
		cd, err = up.Client.Copy(imap.UIDSetNum(uid), mailbox).Wait()
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &imap.AppendData{}
	if cd != nil && cd.UIDValidity != 0 {
		if uids, ok := cd.DestUIDs.Nums(); ok && len(uids) == 1 {
			out.UIDValidity, out.UID = cd.UIDValidity, uids[0]
		}
	}
	if out.UID == 0 {
		// The message vanished (expunged) or the server lacks UIDPLUS: without COPYUID a COPY that copied
		// nothing cannot be told from success, so the caller encrypts instead.
		return nil, errors.New("proxy: upstream COPY of the original gave no COPYUID")
	}
	return out, nil
}

// peekHeader reads r up to and including the empty line that ends the header (RFC 5322 section 2.1), at most
// maxHeaderPeek bytes; the bytes read are returned and must be sent before the rest of r.
func peekHeader(r io.Reader) ([]byte, error) {
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 4096)
	for len(buf) < maxHeaderPeek {
		n, err := r.Read(chunk[:min(len(chunk), maxHeaderPeek-len(buf))])
		buf = append(buf, chunk[:n]...)
		if bytes.Contains(buf, []byte("\n\r\n")) || bytes.Contains(buf, []byte("\n\n")) || bytes.HasPrefix(buf, []byte("\r\n")) {
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
