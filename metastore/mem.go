package metastore

import (
	"container/list"
	"math"
	"slices"
	"sync"
)

// memStore is one user's entries in memory (Options.Dir empty): the same rules as on disk, nothing sealed.
type memStore struct {
	max int64

	mu      sync.Mutex
	used    int64
	lru     *list.List // of *memEntry, most recently used first
	entries map[memKey]*list.Element
	uvs     map[string]uint32
	states  map[string][]byte // mailbox → state of uvs[mailbox]
}

type memKey struct {
	mailbox          string
	uidValidity, uid uint32
}

type memEntry struct {
	key   memKey
	value []byte
}

func newMemStore(max int64) *memStore {
	return &memStore{max: max, lru: list.New(), entries: map[memKey]*list.Element{}, uvs: map[string]uint32{},
		states: map[string][]byte{}}
}

func (m *memStore) size(e *memEntry) int64 { return int64(len(e.key.mailbox)+len(e.value)) + 64 }

func (m *memStore) get(mailbox string, uidValidity, uid uint32) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[memKey{mailbox, uidValidity, uid}]
	if !ok {
		return nil, false
	}
	m.lru.MoveToFront(el)
	return el.Value.(*memEntry).value, true
}

func (m *memStore) getRange(mailbox string, uidValidity, from uint32, max int, f func(uid uint32, value []byte)) uint32 {
	m.mu.Lock()
	var uids []uint32
	for k := range m.entries {
		if k.mailbox == mailbox && k.uidValidity == uidValidity && k.uid >= from {
			uids = append(uids, k.uid)
		}
	}
	slices.Sort(uids)
	type kv struct {
		uid   uint32
		value []byte
	}
	out := make([]kv, 0, min(len(uids), max))
	for _, uid := range uids[:min(len(uids), max)] {
		el := m.entries[memKey{mailbox, uidValidity, uid}]
		m.lru.MoveToFront(el)
		out = append(out, kv{uid, el.Value.(*memEntry).value})
	}
	m.mu.Unlock()
	for _, e := range out {
		f(e.uid, e.value)
	}
	if len(uids) > max {
		return out[len(out)-1].uid
	}
	return math.MaxUint32
}

func (m *memStore) getState(mailbox string, uidValidity uint32) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if uv, ok := m.uvs[mailbox]; !ok || uv != uidValidity {
		return nil, false
	}
	v, ok := m.states[mailbox]
	return v, ok
}

func (m *memStore) putState(mailbox string, uidValidity uint32, value []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setUIDValidityLocked(mailbox, uidValidity)
	m.states[mailbox] = append([]byte(nil), value...)
}

// setUIDValidityLocked makes uidValidity mailbox's current one, dropping what was kept of another.
func (m *memStore) setUIDValidityLocked(mailbox string, uidValidity uint32) {
	if uv, ok := m.uvs[mailbox]; !ok || uv != uidValidity {
		if ok {
			m.pruneLocked(mailbox, uidValidity, nil, 0)
		}
		m.uvs[mailbox] = uidValidity
	}
}

func (m *memStore) put(mailbox string, uidValidity, uid uint32, value func() []byte) {
	v := value()
	if v == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setUIDValidityLocked(mailbox, uidValidity)
	k := memKey{mailbox, uidValidity, uid}
	if el, ok := m.entries[k]; ok {
		m.removeLocked(el)
	}
	e := &memEntry{key: k, value: v}
	m.entries[k] = m.lru.PushFront(e)
	m.used += m.size(e)
	for m.used > m.max && m.lru.Len() > 0 {
		m.removeLocked(m.lru.Back())
	}
}

func (m *memStore) removeLocked(el *list.Element) {
	e := m.lru.Remove(el).(*memEntry)
	delete(m.entries, e.key)
	m.used -= m.size(e)
}

func (m *memStore) prune(mailbox string, uidValidity uint32, live func(uint32) bool, upTo uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked(mailbox, uidValidity, live, upTo)
}

func (m *memStore) pruneLocked(mailbox string, uidValidity uint32, live func(uint32) bool, upTo uint32) {
	if uv, ok := m.uvs[mailbox]; ok && uv != uidValidity {
		delete(m.states, mailbox)
	}
	for k, el := range m.entries {
		if k.mailbox == mailbox && (k.uidValidity != uidValidity || live != nil && k.uid <= upTo && !live(k.uid)) {
			m.removeLocked(el)
		}
	}
}

func (m *memStore) flush() {}

func (m *memStore) stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Entries: len(m.entries), Bytes: m.used}
}

func (m *memStore) close() error { return nil }
