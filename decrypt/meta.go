package decrypt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"

	"github.com/smimeproxy/smimeproxy/internal/rewriting"
)

// The metadata store (Options.MetaStore, package metastore) keeps, per served message, rewriting.MetaOf of its
// served copy: what a header sync asks for, so that after a restart, or once the plaintext has left the
// memory cache, it is answered without fetching or decrypting. A value is
//
//	version (1) | generation (8) | size (8) | 4 × (length (4) | bytes): header, envelope, body, bodystructure
//
// The generation is a digest of the marker key and of the options that change served bytes: served copies
// carry a MAC under the marker key (marker.go), so metadata stored under another describes other bytes and is
// not used.
const metaVersion = 1

// metaGeneration returns the generation of values this Decrypter writes and accepts.
func metaGeneration(markerKey []byte, explain bool) [8]byte {
	opts := "explain=false\x00"
	if explain {
		opts = "explain=true\x00"
	}
	h := sha256.Sum256(append([]byte("smimeproxy metadata generation\x00"+opts), markerKey...))
	var g [8]byte
	copy(g[:], h[:])
	return g
}

func (d *Decrypter) encodeMeta(m rewriting.Meta) []byte {
	out := make([]byte, 0, 17+16+len(m.Header)+len(m.Envelope)+len(m.Body)+len(m.BodyStructure))
	out = append(out, metaVersion)
	out = append(out, d.metaGen[:]...)
	out = binary.BigEndian.AppendUint64(out, uint64(m.Size))
	for _, f := range [][]byte{m.Header, m.Envelope, m.Body, m.BodyStructure} {
		out = binary.BigEndian.AppendUint32(out, uint32(len(f)))
		out = append(out, f...)
	}
	return out
}

func (d *Decrypter) decodeMeta(b []byte) (rewriting.Meta, bool) {
	if len(b) < 17 || b[0] != metaVersion || !bytes.Equal(b[1:9], d.metaGen[:]) {
		return rewriting.Meta{}, false
	}
	m := rewriting.Meta{Size: int64(binary.BigEndian.Uint64(b[9:17]))}
	b = b[17:]
	for _, f := range []*[]byte{&m.Header, &m.Envelope, &m.Body, &m.BodyStructure} {
		if len(b) < 4 {
			return rewriting.Meta{}, false
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(len(b)-4) < uint64(n) {
			return rewriting.Meta{}, false
		}
		*f, b = b[4:4+n:4+n], b[4+n:]
	}
	return m, len(b) == 0
}

// Meta implements proxy.MetaSource from the metadata store.
func (d *Decrypter) Meta(m MessageRef) (rewriting.Meta, bool) {
	if d.meta == nil {
		return rewriting.Meta{}, false
	}
	v, ok := d.meta.Get(context.Background(), m.User, m.Mailbox, m.UIDValidity, m.UID)
	if !ok {
		return rewriting.Meta{}, false
	}
	return d.decodeMeta(v)
}

// MetaRange implements proxy.MetaSource from the metadata store: one read for many messages.
func (d *Decrypter) MetaRange(m MessageRef, max int, f func(uid uint32, meta rewriting.Meta)) uint32 {
	if d.meta == nil {
		return m.UID - 1
	}
	return d.meta.GetRange(context.Background(), m.User, m.Mailbox, m.UIDValidity, m.UID, max, func(uid uint32, v []byte) {
		if meta, ok := d.decodeMeta(v); ok {
			f(uid, meta)
		}
	})
}

// PruneMeta implements proxy.MetaPruner: expunged messages' metadata is dropped.
func (d *Decrypter) PruneMeta(m MessageRef, live func(uid uint32) bool, upTo uint32) {
	if d.meta != nil {
		d.meta.Prune(context.Background(), m.User, m.Mailbox, m.UIDValidity, live, upTo)
		d.meta.Prune(context.Background(), m.User, textMailboxPrefix+m.Mailbox, m.UIDValidity, live, upTo)
	}
}

// storeMeta queues the metadata of served, m's served copy, unless it is stored already. It is computed in
// the store's writer, off the serving path.
// Its searchable text (searchtext.go) goes beside it the same way.
func (d *Decrypter) storeMeta(ctx context.Context, m MessageRef, served []byte) {
	if d.meta == nil {
		return
	}
	if _, ok := d.Meta(m); !ok {
		d.meta.Put(ctx, m.User, m.Mailbox, m.UIDValidity, m.UID, func() []byte { return d.encodeMeta(rewriting.MetaOf(served)) })
	}
	if _, ok := d.meta.Get(ctx, m.User, textMailboxPrefix+m.Mailbox, m.UIDValidity, m.UID); !ok {
		d.meta.Put(ctx, m.User, textMailboxPrefix+m.Mailbox, m.UIDValidity, m.UID, func() []byte { return d.encodeText(textOf(served)) })
	}
}

// The relay's classification of a mailbox (proxy.IndexState) is kept in the metadata store as the mailbox's
// state (metastore.Store.PutState):
//
//	version (1) | len (uvarint) | classifier | checked (uvarint) | n (uvarint) | n × (gap (uvarint) | length-1 (uvarint))
//
// the candidates as ranges of consecutive UIDs, each gap counted from the end of the range before it.
// indexVersion also covers Candidate's rules (decrypt.go): a change to which messages they accept must
// change it, so that no stored classification made under the old ones is used.
const indexVersion = 1

// LoadIndex implements proxy.IndexStore.
func (d *Decrypter) LoadIndex(m MessageRef) (rewriting.IndexState, bool) {
	if d.meta == nil {
		return rewriting.IndexState{}, false
	}
	v, ok := d.meta.GetState(context.Background(), m.User, m.Mailbox, m.UIDValidity)
	if !ok {
		return rewriting.IndexState{}, false
	}
	return decodeIndex(v)
}

// SaveIndex implements proxy.IndexStore.
func (d *Decrypter) SaveIndex(m MessageRef, st rewriting.IndexState) {
	if d.meta != nil {
		d.meta.PutState(context.Background(), m.User, m.Mailbox, m.UIDValidity, encodeIndex(st))
	}
}

func encodeIndex(st rewriting.IndexState) []byte {
	type span struct{ start, end uint32 } // end inclusive
	var spans []span
	for _, u := range st.Candidates {
		if n := len(spans); n > 0 && spans[n-1].end+1 == u {
			spans[n-1].end = u
			continue
		}
		spans = append(spans, span{u, u})
	}
	out := []byte{indexVersion}
	out = binary.AppendUvarint(out, uint64(len(st.Classifier)))
	out = append(out, st.Classifier...)
	out = binary.AppendUvarint(out, uint64(st.Checked))
	out = binary.AppendUvarint(out, uint64(len(spans)))
	prev := uint32(0)
	for _, sp := range spans {
		out = binary.AppendUvarint(out, uint64(sp.start-prev))
		out = binary.AppendUvarint(out, uint64(sp.end-sp.start))
		prev = sp.end
	}
	return out
}

func decodeIndex(b []byte) (rewriting.IndexState, bool) {
	var st rewriting.IndexState
	if len(b) == 0 || b[0] != indexVersion {
		return st, false
	}
	b = b[1:]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	n, ok := next()
	if !ok || n > uint64(len(b)) {
		return st, false
	}
	st.Classifier, b = string(b[:n]), b[n:]
	checked, ok := next()
	if !ok || checked > 1<<32-1 {
		return st, false
	}
	st.Checked = uint32(checked)
	spans, ok := next()
	if !ok || spans > uint64(len(b)) {
		return st, false
	}
	prev := uint64(0)
	for range spans {
		gap, ok1 := next()
		length, ok2 := next()
		start := prev + gap
		if !ok1 || !ok2 || (prev > 0 && gap == 0) || start == 0 || start+length > checked || len(st.Candidates)+int(length) > int(checked) {
			return rewriting.IndexState{}, false
		}
		for u := start; u <= start+length; u++ {
			st.Candidates = append(st.Candidates, uint32(u))
		}
		prev = start + length
	}
	return st, len(b) == 0
}
