package keystore

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

// Memory is a Store held in process memory only (the demo and tests). The zero value is not usable; call
// NewMemory.
type Memory struct {
	mu   sync.RWMutex
	keys map[string]map[string]Key // user -> id -> key
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{keys: map[string]map[string]Key{}} }

// Lookup implements Store.
func (m *Memory) Lookup(_ context.Context, user string, ids []cms.RecipientID) ([]Key, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Key
	for _, k := range m.keys[user] {
		if matchesAny(k.Cert, ids) {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// List implements Store.
func (m *Memory) List(_ context.Context, user string) ([]Entry, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Entry
	for _, k := range m.keys[user] {
		out = append(out, k.Entry)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Put implements Store. Transit is refused.
func (m *Memory) Put(_ context.Context, user string, chain []*x509.Certificate, key crypto.PrivateKey, opts PutOptions) (Entry, error) {
	if opts.Transit {
		return Entry{}, errors.New("keystore: the in-memory store has no Transit")
	}
	if len(chain) == 0 || chain[0] == nil {
		return Entry{}, errors.New("keystore: no certificate")
	}
	if key == nil {
		return Entry{}, errors.New("keystore: no private key")
	}
	e := EntryOf(chain[0], StorageMemory)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys[user] == nil {
		m.keys[user] = map[string]Key{}
	}
	m.keys[user][e.ID] = Key{Entry: e, Cert: chain[0], Chain: append([]*x509.Certificate(nil), chain...), Private: key}
	return e, nil
}

// Remove implements Store.
func (m *Memory) Remove(_ context.Context, user, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[user][id]; !ok {
		return fmt.Errorf("%w: user %q id %q", ErrNotFound, user, id)
	}
	delete(m.keys[user], id)
	return nil
}
