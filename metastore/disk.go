package metastore

import (
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/crypto/chacha20poly1305"
)

// The file's layout (bbolt buckets):
//
//	e  entries: mailbox id (16) | UIDVALIDITY (4) | UID (4)  →  tick (8) | nonce (24) | sealed value
//	a  access order: tick (8) | entry key (28)  →  empty     (least recently used first)
//	m  mailboxes: mailbox id  →  the UIDVALIDITY whose entries are kept
//	i  mailbox states: mailbox id (16) | UIDVALIDITY (4)  →  nonce (24) | sealed value   (PutState)
//	s  state: "check" (the key and namespace check), "tick", "bytes", "count"
//
// The mailbox id is HMAC-SHA256(mailbox name) under a key derived from the user's key, cut to 16 bytes.
var (
	bucketEntries = []byte("e")
	bucketAccess  = []byte("a")
	bucketMboxes  = []byte("m")
	bucketStates  = []byte("i")
	bucketState   = []byte("s")
)

const (
	mboxIDLen   = 16
	entryKeyLen = mboxIDLen + 8
	tickLen     = 8
)

// ErrWrongKey says a file was sealed under another key (another user's, or a key replaced in Vault).
var ErrWrongKey = errors.New("metastore: the file was written under another key")

type mboxID [mboxIDLen]byte

// sealer seals and opens values under one user's key.
type sealer struct {
	aead   cipher.AEAD
	macKey []byte
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) < 32 {
		return nil, errors.New("metastore: key shorter than 32 bytes")
	}
	encKey, err := hkdf.Key(sha256.New, key, nil, "smimeproxy metastore v1 values", chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	macKey, err := hkdf.Key(sha256.New, key, nil, "smimeproxy metastore v1 mailbox ids", 32)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(encKey)
	if err != nil {
		return nil, err
	}
	clear(encKey)
	return &sealer{aead: aead, macKey: macKey}, nil
}

func (s *sealer) mailbox(name string) mboxID {
	h := hmac.New(sha256.New, s.macKey)
	h.Write([]byte(name))
	var id mboxID
	copy(id[:], h.Sum(nil))
	return id
}

// seal returns nonce | ciphertext of value, bound to ad.
func (s *sealer) seal(dst, ad, value []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("metastore: no randomness: " + err.Error())
	}
	dst = append(dst, nonce...)
	return s.aead.Seal(dst, nonce, value, ad)
}

func (s *sealer) open(ad, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrWrongKey
	}
	out, err := s.aead.Open(nil, sealed[:n], sealed[n:], ad)
	if err != nil {
		return nil, ErrWrongKey
	}
	return out, nil
}

func stateKey(id mboxID, uidValidity uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), id[:]...), uidValidity)
}

// stateAD is the additional data of a mailbox state.
func stateAD(key []byte) []byte { return append([]byte("state\x00"), key...) }

func entryKey(id mboxID, uidValidity, uid uint32) []byte {
	k := make([]byte, entryKeyLen)
	copy(k, id[:])
	binary.BigEndian.PutUint32(k[mboxIDLen:], uidValidity)
	binary.BigEndian.PutUint32(k[mboxIDLen+4:], uid)
	return k
}

// adOf is the additional data of an entry: its key, so a sealed value opens only where it was written.
func adOf(key []byte) []byte { return append([]byte("entry\x00"), key...) }

// diskStore is one user's file.
type diskStore struct {
	db      *bolt.DB
	path    string
	s       *sealer
	max     int64
	log     *slog.Logger
	tick    atomic.Uint64
	count   atomic.Int64
	bytes   atomic.Int64
	ops     chan op
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once

	idMu sync.Mutex
	ids  map[string]mboxID

	// states are the mailbox states not written yet (putState), the latest of each: written with the next
	// batch, so that a caller never waits for a full queue.
	statesMu sync.Mutex
	states   map[string]op
}

type opKind int

const (
	opPut opKind = iota
	opTouch
	opPrune
	opFlush
	opState
)

type op struct {
	kind  opKind
	key   []byte
	value func() []byte
	id    mboxID
	uv    uint32
	live  func(uint32) bool
	upTo  uint32
	done  chan struct{}
}

// openUser opens (creating) the file at path with key. A file sealed under another key or written for
// another namespace is discarded and started afresh (its contents cannot be read anyway).
func openUser(path string, key []byte, namespace string, max int64, log *slog.Logger) (*diskStore, error) {
	s, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	d, err := openFile(path, s, namespace)
	if errors.Is(err, ErrWrongKey) {
		log.Warn("metadata store file sealed under another key or for another upstream; starting it afresh", "file", path)
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("metastore: %w", err)
		}
		d, err = openFile(path, s, namespace)
	}
	if err != nil {
		return nil, err
	}
	d.max, d.log = max, log
	go d.writer()
	return d, nil
}

// openFile opens the bbolt file and checks that it was written under s's key for namespace.
func openFile(path string, s *sealer, namespace string) (*diskStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("metastore: %s is in use by another process", path)
		}
		return nil, fmt.Errorf("metastore: %w", err)
	}
	d := &diskStore{db: db, path: path, s: s, ops: make(chan op, 4096), stop: make(chan struct{}),
		stopped: make(chan struct{}), ids: map[string]mboxID{}}
	ns := sha256.Sum256([]byte("namespace\x00" + namespace))
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketAccess, bucketMboxes, bucketStates, bucketState} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		st := tx.Bucket(bucketState)
		check := st.Get([]byte("check"))
		if check == nil {
			if tx.Bucket(bucketEntries).Stats().KeyN > 0 {
				return ErrWrongKey
			}
			return st.Put([]byte("check"), s.seal(nil, []byte("check"), ns[:]))
		}
		got, err := s.open([]byte("check"), check)
		if err != nil || !bytes.Equal(got, ns[:]) {
			return ErrWrongKey
		}
		d.tick.Store(u64(st.Get([]byte("tick"))))
		d.count.Store(int64(u64(st.Get([]byte("count")))))
		d.bytes.Store(int64(u64(st.Get([]byte("bytes")))))
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func (d *diskStore) mailbox(name string) mboxID {
	d.idMu.Lock()
	defer d.idMu.Unlock()
	id, ok := d.ids[name]
	if !ok {
		if len(d.ids) > 4096 {
			clear(d.ids)
		}
		id = d.s.mailbox(name)
		d.ids[name] = id
	}
	return id
}

func (d *diskStore) get(mailbox string, uidValidity, uid uint32) ([]byte, bool) {
	key := entryKey(d.mailbox(mailbox), uidValidity, uid)
	var tick uint64
	var sealed []byte
	_ = d.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketEntries).Get(key)
		if len(v) > tickLen {
			tick = binary.BigEndian.Uint64(v)
			sealed = append([]byte(nil), v[tickLen:]...)
		}
		return nil
	})
	if sealed == nil {
		return nil, false
	}
	value, err := d.s.open(adOf(key), sealed)
	if err != nil {
		return nil, false
	}
	d.touch(key, tick)
	return value, true
}

// touch records an access to the entry key last used at tick. Nothing is recorded while the store is at
// most half full: nothing is evicted before it fills, and a header sync reads every entry of a mailbox, so
// recording each read would rewrite the file on every sync. Above that, recently used entries are not moved
// either; the older three quarters are, once.
func (d *diskStore) touch(key []byte, tick uint64) {
	if d.bytes.Load() > d.max/2 && tick+uint64(d.count.Load())/4 < d.tick.Load() {
		d.send(op{kind: opTouch, key: key}, false)
	}
}

// getRangeBatch bounds the values read in one transaction by getRange.
const getRangeBatch = 1024

func (d *diskStore) getRange(mailbox string, uidValidity, from uint32, max int, f func(uid uint32, value []byte)) uint32 {
	id := d.mailbox(mailbox)
	prefix := stateKey(id, uidValidity)
	type sealedEntry struct {
		key, sealed []byte
		tick        uint64
	}
	entries := make([]sealedEntry, 0, min(max, getRangeBatch))
	through := uint32(math.MaxUint32)
	err := d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.Seek(entryKey(id, uidValidity, from)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(entries) == cap(entries) {
				through = binary.BigEndian.Uint32(entries[len(entries)-1].key[mboxIDLen+4:])
				break
			}
			if len(k) != entryKeyLen || len(v) <= tickLen {
				continue
			}
			entries = append(entries, sealedEntry{bytes.Clone(k), bytes.Clone(v[tickLen:]), binary.BigEndian.Uint64(v)})
		}
		return nil
	})
	if err != nil {
		return from - 1
	}
	for _, e := range entries {
		value, err := d.s.open(adOf(e.key), e.sealed)
		if err != nil {
			continue
		}
		d.touch(e.key, e.tick)
		f(binary.BigEndian.Uint32(e.key[mboxIDLen+4:]), value)
	}
	return through
}

func (d *diskStore) getState(mailbox string, uidValidity uint32) ([]byte, bool) {
	key := stateKey(d.mailbox(mailbox), uidValidity)
	var sealed []byte
	_ = d.db.View(func(tx *bolt.Tx) error {
		sealed = bytes.Clone(tx.Bucket(bucketStates).Get(key))
		return nil
	})
	if sealed == nil {
		return nil, false
	}
	value, err := d.s.open(stateAD(key), sealed)
	return value, err == nil
}

func (d *diskStore) putState(mailbox string, uidValidity uint32, value []byte) {
	id := d.mailbox(mailbox)
	value = bytes.Clone(value)
	d.statesMu.Lock()
	if d.states == nil {
		d.states = map[string]op{}
	}
	d.states[string(stateKey(id, uidValidity))] = op{id: id, uv: uidValidity, value: func() []byte { return value }}
	d.statesMu.Unlock()
	d.send(op{kind: opState}, false) // a nudge: when the queue is full, a batch comes soon anyway
}

func (d *diskStore) put(mailbox string, uidValidity, uid uint32, value func() []byte) {
	id := d.mailbox(mailbox)
	d.send(op{kind: opPut, key: entryKey(id, uidValidity, uid), id: id, uv: uidValidity, value: value}, true)
}

func (d *diskStore) prune(mailbox string, uidValidity uint32, live func(uint32) bool, upTo uint32) {
	d.send(op{kind: opPrune, id: d.mailbox(mailbox), uv: uidValidity, live: live, upTo: upTo}, true)
}

// send queues o; a full queue drops a touch at once and anything else after a while (the store is a cache).
func (d *diskStore) send(o op, wait bool) bool {
	select {
	case d.ops <- o:
		return true
	case <-d.stop:
		return false
	default:
	}
	if !wait {
		return false
	}
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case d.ops <- o:
		return true
	case <-d.stop:
	case <-t.C:
		d.log.Warn("metadata store write queue full; dropping an entry")
	}
	return false
}

func (d *diskStore) flush() {
	done := make(chan struct{})
	if d.send(op{kind: opFlush, done: done}, true) {
		select {
		case <-done:
		case <-d.stopped:
		}
	}
}

// batchWait is how long the writer gathers operations into one transaction.
const batchWait = 100 * time.Millisecond

// writer applies queued operations in batches, one transaction each.
func (d *diskStore) writer() {
	defer close(d.stopped)
	for {
		var batch []op
		select {
		case o := <-d.ops:
			batch = append(batch, o)
		case <-d.stop:
			// Write what is queued, then stop.
			for {
				select {
				case o := <-d.ops:
					batch = append(batch, o)
					continue
				default:
				}
				break
			}
			d.apply(batch)
			return
		}
		// Gather for a moment: one transaction (one commit, two fsyncs) for many entries costs far less CPU
		// than one each, and the CPU is what the decryptions of a first sync need. A flush goes at once.
		wait := time.NewTimer(batchWait)
	drain:
		for len(batch) < 2048 && batch[len(batch)-1].kind != opFlush {
			select {
			case o := <-d.ops:
				batch = append(batch, o)
			case <-wait.C:
				break drain
			case <-d.stop:
				break drain
			}
		}
		wait.Stop()
		d.apply(batch)
	}
}

func (d *diskStore) apply(batch []op) {
	d.statesMu.Lock()
	pending := len(d.states) > 0
	d.statesMu.Unlock()
	if len(batch) == 0 && !pending {
		return
	}
	err := d.db.Update(func(tx *bolt.Tx) error {
		w := &txn{d: d, e: tx.Bucket(bucketEntries), a: tx.Bucket(bucketAccess), m: tx.Bucket(bucketMboxes),
			i: tx.Bucket(bucketStates), st: tx.Bucket(bucketState), tick: d.tick.Load(), count: d.count.Load()}
		w.bytes = int64(u64(w.st.Get([]byte("bytes"))))
		// The states recorded so far, written where their nudge is in the batch (so after the entries put
		// before them), or at its end.
		writeStates := func() error {
			d.statesMu.Lock()
			states := d.states
			d.states = nil
			d.statesMu.Unlock()
			for _, o := range states {
				if err := w.putState(o); err != nil {
					return err
				}
			}
			return nil
		}
		for _, o := range batch {
			var err error
			switch o.kind {
			case opPut:
				err = w.put(o)
			case opTouch:
				err = w.touch(o.key)
			case opPrune:
				err = w.prune(o.id, o.uv, o.live, o.upTo)
			case opState:
				err = writeStates()
			}
			if err != nil {
				return err
			}
		}
		if err := writeStates(); err != nil {
			return err
		}
		if err := w.evict(); err != nil {
			return err
		}
		for k, v := range map[string]uint64{"tick": w.tick, "bytes": uint64(w.bytes), "count": uint64(w.count)} {
			if err := w.st.Put([]byte(k), be64(v)); err != nil {
				return err
			}
		}
		d.tick.Store(w.tick)
		d.count.Store(w.count)
		d.bytes.Store(w.bytes)
		return nil
	})
	if err != nil {
		d.log.Warn("metadata store write failed", "err", err)
		// The counters may be ahead of the file now: reload them.
		_ = d.db.View(func(tx *bolt.Tx) error {
			st := tx.Bucket(bucketState)
			d.tick.Store(u64(st.Get([]byte("tick"))))
			d.count.Store(int64(u64(st.Get([]byte("count")))))
			d.bytes.Store(int64(u64(st.Get([]byte("bytes")))))
			return nil
		})
	}
	for _, o := range batch {
		if o.done != nil {
			close(o.done)
		}
	}
}

// txn is one write transaction's view of the buckets and counters.
type txn struct {
	d              *diskStore
	e, a, m, i, st *bolt.Bucket
	tick           uint64
	count, bytes   int64
}

func accessKey(tick uint64, key []byte) []byte {
	return append(be64(tick), key...)
}

// remove deletes the entry key whose value is v.
func (w *txn) remove(key, v []byte) error {
	if err := w.a.Delete(accessKey(u64(v[:tickLen]), key)); err != nil {
		return err
	}
	w.bytes -= int64(len(key) + len(v))
	w.count--
	return w.e.Delete(key)
}

// setUIDValidity makes uv mailbox id's current UIDVALIDITY, dropping the entries and states of another.
func (w *txn) setUIDValidity(id mboxID, uv uint32) error {
	if old := w.m.Get(id[:]); old == nil || binary.BigEndian.Uint32(old) != uv {
		if old != nil {
			if err := w.prune(id, uv, nil, 0); err != nil {
				return err
			}
		}
		return w.m.Put(id[:], binary.BigEndian.AppendUint32(nil, uv))
	}
	return nil
}

func (w *txn) putState(o op) error {
	if err := w.setUIDValidity(o.id, o.uv); err != nil {
		return err
	}
	key := stateKey(o.id, o.uv)
	return w.i.Put(key, w.d.s.seal(nil, stateAD(key), o.value()))
}

func (w *txn) put(o op) error {
	if err := w.setUIDValidity(o.id, o.uv); err != nil {
		return err
	}
	value := o.value()
	if value == nil {
		return nil
	}
	if old := w.e.Get(o.key); len(old) >= tickLen {
		if err := w.remove(o.key, append([]byte(nil), old...)); err != nil {
			return err
		}
	}
	w.tick++
	v := w.d.s.seal(be64(w.tick), adOf(o.key), value)
	if err := w.e.Put(o.key, v); err != nil {
		return err
	}
	w.bytes += int64(len(o.key) + len(v))
	w.count++
	return w.a.Put(accessKey(w.tick, o.key), nil)
}

func (w *txn) touch(key []byte) error {
	old := w.e.Get(key)
	if len(old) < tickLen {
		return nil
	}
	v := append([]byte(nil), old...)
	if err := w.a.Delete(accessKey(u64(v[:tickLen]), key)); err != nil {
		return err
	}
	w.tick++
	binary.BigEndian.PutUint64(v, w.tick)
	if err := w.e.Put(key, v); err != nil {
		return err
	}
	return w.a.Put(accessKey(w.tick, key), nil)
}

// prune deletes the entries of mailbox id of another UIDVALIDITY than uv, and those of uv up to upTo that
// live rejects (live nil: none).
func (w *txn) prune(id mboxID, uv uint32, live func(uint32) bool, upTo uint32) error {
	type kv struct{ k, v []byte }
	var drop []kv
	c := w.e.Cursor()
	for k, v := c.Seek(id[:]); k != nil && bytes.HasPrefix(k, id[:]); k, v = c.Next() {
		kuv := binary.BigEndian.Uint32(k[mboxIDLen:])
		uid := binary.BigEndian.Uint32(k[mboxIDLen+4:])
		if kuv != uv || live != nil && uid <= upTo && !live(uid) {
			drop = append(drop, kv{append([]byte(nil), k...), append([]byte(nil), v...)})
		}
	}
	for _, e := range drop {
		if err := w.remove(e.k, e.v); err != nil {
			return err
		}
	}
	var stale [][]byte
	c = w.i.Cursor()
	for k, _ := c.Seek(id[:]); k != nil && bytes.HasPrefix(k, id[:]); k, _ = c.Next() {
		if binary.BigEndian.Uint32(k[mboxIDLen:]) != uv {
			stale = append(stale, bytes.Clone(k))
		}
	}
	for _, k := range stale {
		if err := w.i.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// evict drops least recently used entries until the bound holds again, with a tenth to spare.
func (w *txn) evict() error {
	if w.bytes <= w.d.max {
		return nil
	}
	target := w.d.max - w.d.max/10
	var drop [][]byte
	c := w.a.Cursor()
	freed := int64(0)
	for k, _ := c.First(); k != nil && w.bytes-freed > target; k, _ = c.Next() {
		key := append([]byte(nil), k[tickLen:]...)
		if v := w.e.Get(key); v != nil {
			freed += int64(len(key) + len(v))
		}
		drop = append(drop, key)
	}
	for _, key := range drop {
		v := w.e.Get(key)
		if v == nil {
			continue
		}
		if err := w.remove(key, append([]byte(nil), v...)); err != nil {
			return err
		}
	}
	return nil
}

func (d *diskStore) stats() Stats {
	var st Stats
	_ = d.db.View(func(tx *bolt.Tx) error {
		s := tx.Bucket(bucketState)
		st.Entries = int(u64(s.Get([]byte("count"))))
		st.Bytes = int64(u64(s.Get([]byte("bytes"))))
		st.FileBytes = tx.Size()
		return nil
	})
	return st
}

func (d *diskStore) close() error {
	d.once.Do(func() { close(d.stop) })
	<-d.stopped
	return d.db.Close()
}
