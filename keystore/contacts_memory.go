package keystore

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// MemoryBook is an AddressBook held in process memory only (the demo and tests of callers). The zero value is
// not usable; call NewMemoryBook.
type MemoryBook struct {
	// Now is the clock for validity and Added times; time.Now when nil. Set it before first use.
	Now func() time.Time

	mu    sync.Mutex
	books map[string]map[string]map[string]Contact // user -> address -> fingerprint -> entry
}

var _ AddressBook = (*MemoryBook)(nil)

// NewMemoryBook returns an empty in-memory address book.
func NewMemoryBook() *MemoryBook {
	return &MemoryBook{books: map[string]map[string]map[string]Contact{}}
}

func (m *MemoryBook) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Certificates implements AddressBook.
func (m *MemoryBook) Certificates(_ context.Context, user, address string) ([]Contact, error) {
	a, err := NormalizeAddress(address)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sortedLocked(user, a), nil
}

func (m *MemoryBook) sortedLocked(user, address string) []Contact {
	var out []Contact
	for _, c := range m.books[user][address] {
		out = append(out, c)
	}
	SortContacts(out, m.now())
	return out
}

// Add implements AddressBook.
func (m *MemoryBook) Add(_ context.Context, user string, cert *x509.Certificate, opts AddOptions) ([]Contact, error) {
	if cert == nil {
		return nil, errContactNoCert
	}
	addrs := CertAddresses(cert)
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoAddress, cert.Subject)
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Contact
	var errs []error
	for _, a := range addrs {
		c, err := NewContact(a, cert, opts, now)
		if err != nil {
			return out, err
		}
		plan, err := PlanAdd(m.sortedLocked(user, a), c, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if m.books[user] == nil {
			m.books[user] = map[string]map[string]Contact{}
		}
		if m.books[user][a] == nil {
			m.books[user][a] = map[string]Contact{}
		}
		if plan.Write {
			m.books[user][a][plan.Store.Fingerprint] = plan.Store
		}
		for _, fp := range plan.Evict {
			delete(m.books[user][a], fp)
		}
		out = append(out, plan.Store)
	}
	return out, errors.Join(errs...)
}

// Remove implements AddressBook.
func (m *MemoryBook) Remove(_ context.Context, user, address, fingerprint string) error {
	a, err := NormalizeAddress(address)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.books[user][a][fingerprint]; !ok {
		return fmt.Errorf("%w: %s %s", ErrContactNotFound, a, fingerprint)
	}
	delete(m.books[user][a], fingerprint)
	return nil
}

// SetTrust implements AddressBook.
func (m *MemoryBook) SetTrust(_ context.Context, user, address, fingerprint, trust string) (Contact, error) {
	if err := CheckTrust(trust); err != nil {
		return Contact{}, err
	}
	a, err := NormalizeAddress(address)
	if err != nil {
		return Contact{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.books[user][a][fingerprint]
	if !ok {
		return Contact{}, fmt.Errorf("%w: %s %s", ErrContactNotFound, a, fingerprint)
	}
	c.Trust = trust
	m.books[user][a][fingerprint] = c
	return c, nil
}

// List implements AddressBook.
func (m *MemoryBook) List(_ context.Context, user string) ([]Contact, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var addrs []string
	for a := range m.books[user] {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, strings.Compare)
	var out []Contact
	for _, a := range addrs {
		out = append(out, m.sortedLocked(user, a)...)
	}
	return out, nil
}
