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

// PruneMeta implements proxy.MetaPruner: expunged messages' metadata is dropped.
func (d *Decrypter) PruneMeta(m MessageRef, live func(uid uint32) bool, upTo uint32) {
	if d.meta != nil {
		d.meta.Prune(context.Background(), m.User, m.Mailbox, m.UIDValidity, live, upTo)
	}
}

// storeMeta queues the metadata of served, m's served copy, unless it is stored already. It is computed in
// the store's writer, off the serving path.
func (d *Decrypter) storeMeta(ctx context.Context, m MessageRef, served []byte) {
	if d.meta == nil {
		return
	}
	if _, ok := d.Meta(m); ok {
		return
	}
	d.meta.Put(ctx, m.User, m.Mailbox, m.UIDValidity, m.UID, func() []byte { return d.encodeMeta(rewriting.MetaOf(served)) })
}
