// Package metastore keeps small data derived from served (decrypted) messages — their size, BODYSTRUCTURE,
// ENVELOPE and header block, in a form the caller chooses — per user, mailbox, UIDVALIDITY and UID, so that a
// header sync after a restart, or once the plaintext no longer fits the memory cache, needs no decryption.
//
// On disk (Options.Dir) each IMAP login has one bbolt file (go.etcd.io/bbolt: B+tree, copy-on-write
// transactions, so a process killed mid-write leaves the last committed state). Every value is sealed with
// XChaCha20-Poly1305 under a key derived (HKDF-SHA256, RFC 5869) from the user's 32-byte key, which the caller
// supplies (serve: a KV secret in Vault, never on disk), with the entry's key as additional data, so a value
// cannot be moved to another message. Mailbox names are stored only as HMAC-SHA256 under the user's key; the
// file holds no plaintext of the mail, no mailbox name and no key. Files are named by a hash of the login.
//
// Invalidation: a UIDVALIDITY change drops the mailbox's old entries (RFC 9051 section 2.3.1.1: UIDs are
// immutable only within one UIDVALIDITY), Prune removes expunged UIDs, and each user's entries are bounded in
// bytes with least-recently-used eviction. Without Options.Dir everything is kept in memory (demo, tests).
package metastore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DefaultMaxBytes bounds each user's entries when Options.MaxBytes is zero.
const DefaultMaxBytes = 256 << 20

// Options configure Open.
type Options struct {
	// Dir holds one file per user (created 0700). Empty: a store in memory only, lost on exit.
	Dir string
	// Namespace names the upstream server (e.g. its URL): a user's file written for another namespace is
	// discarded on open, so metadata never crosses servers that share login names.
	Namespace string
	// MaxBytes bounds each user's entries (keys and sealed values); the least recently used go first. 0 means
	// DefaultMaxBytes.
	MaxBytes int64
	// Key returns the user's 32-byte store key. Required with Dir. A failure leaves the user without a store
	// for a while (every Get misses, every Put is dropped); it is asked again later.
	Key func(ctx context.Context, user string) ([]byte, error)
	// Logger receives open failures and discarded files (never keys or values); nil discards.
	Logger *slog.Logger
}

// Store is safe for concurrent use.
type Store struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	users  map[string]userStore
	failed map[string]time.Time // user → when to ask for the key again
	closed bool
}

// userStore is one user's entries.
type userStore interface {
	get(mailbox string, uidValidity, uid uint32) ([]byte, bool)
	getRange(mailbox string, uidValidity, from uint32, max int, f func(uid uint32, value []byte)) uint32
	getState(mailbox string, uidValidity uint32) ([]byte, bool)
	putState(mailbox string, uidValidity uint32, value []byte)
	put(mailbox string, uidValidity, uid uint32, value func() []byte)
	prune(mailbox string, uidValidity uint32, live func(uid uint32) bool, upTo uint32)
	flush()
	stats() Stats
	close() error
}

// Stats describe one user's store.
type Stats struct {
	Entries   int
	Bytes     int64 // accounted keys and sealed values
	FileBytes int64 // size of the file (0 in memory)
}

// retryKey is how long a user whose key could not be had stays without a store.
const retryKey = 30 * time.Second

// Open returns a Store. With Dir it creates the directory (0700) when missing; users' files are opened on
// first use.
func Open(opts Options) (*Store, error) {
	if opts.Dir != "" {
		if opts.Key == nil {
			return nil, errors.New("metastore: no key function")
		}
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("metastore: %w", err)
		}
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{opts: opts, log: log, users: map[string]userStore{}, failed: map[string]time.Time{}}, nil
}

// FileName is the name of user's file in a store directory: a hash of the login, so the directory listing
// names no user.
func FileName(user string) string {
	h := sha256.Sum256([]byte("smimeproxy metastore\x00" + user))
	return hex.EncodeToString(h[:16]) + ".db"
}

// user returns user's store, opening it on first use; nil when it cannot be had now.
func (s *Store) user(ctx context.Context, user string) userStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if u := s.users[user]; u != nil {
		return u
	}
	if t, ok := s.failed[user]; ok && time.Now().Before(t) {
		return nil
	}
	var u userStore
	if s.opts.Dir == "" {
		u = newMemStore(s.opts.MaxBytes)
	} else {
		key, err := s.opts.Key(ctx, user)
		if err == nil {
			var d *diskStore
			d, err = openUser(filepath.Join(s.opts.Dir, FileName(user)), key, s.opts.Namespace, s.opts.MaxBytes, s.log)
			clear(key)
			if d != nil {
				u = d
			}
		}
		if err != nil {
			s.log.Warn("metadata store unavailable for this user; serving without it", "user", user, "err", err)
			s.failed[user] = time.Now().Add(retryKey)
			return nil
		}
	}
	delete(s.failed, user)
	s.users[user] = u
	return u
}

// Get returns the value stored for a message.
func (s *Store) Get(ctx context.Context, user, mailbox string, uidValidity, uid uint32) ([]byte, bool) {
	u := s.user(ctx, user)
	if u == nil {
		return nil, false
	}
	return u.get(mailbox, uidValidity, uid)
}

// GetRange calls f, in ascending UID order, with the stored values of mailbox's messages from UID from on, at
// most max of them: one read of the store for the messages a FETCH over a UID range will ask for next. It
// returns the highest UID it covered: every stored value from from through it was passed to f (math.MaxUint32
// when fewer than max were stored; from-1 when nothing could be read).
func (s *Store) GetRange(ctx context.Context, user, mailbox string, uidValidity, from uint32, max int, f func(uid uint32, value []byte)) uint32 {
	if u := s.user(ctx, user); u != nil && max > 0 {
		return u.getRange(mailbox, uidValidity, from, max, f)
	}
	return from - 1
}

// GetState returns the value stored for mailbox as a whole (PutState) under uidValidity.
func (s *Store) GetState(ctx context.Context, user, mailbox string, uidValidity uint32) ([]byte, bool) {
	u := s.user(ctx, user)
	if u == nil {
		return nil, false
	}
	return u.getState(mailbox, uidValidity)
}

// PutState stores one value for mailbox as a whole under uidValidity (the caller's state of the mailbox, e.g.
// which of its messages are encrypted), replacing the older one; like Put, it drops the entries of another
// UIDVALIDITY and does not wait for the write. States are few (one per mailbox) and outside the byte bound.
func (s *Store) PutState(ctx context.Context, user, mailbox string, uidValidity uint32, value []byte) {
	if u := s.user(ctx, user); u != nil {
		u.putState(mailbox, uidValidity, value)
	}
}

// Put stores a message's value, computed by value later (in the background, never under a caller's lock),
// replacing an older one. Storing a value of a mailbox under a new UIDVALIDITY drops the entries of the old
// one. It does not wait for the write (Flush does).
func (s *Store) Put(ctx context.Context, user, mailbox string, uidValidity, uid uint32, value func() []byte) {
	if u := s.user(ctx, user); u != nil {
		u.put(mailbox, uidValidity, uid, value)
	}
}

// Prune drops the entries of mailbox that are not live: every entry of another UIDVALIDITY, and those of
// uidValidity up to upTo whose UID live rejects (expunged). live is called in the background.
func (s *Store) Prune(ctx context.Context, user, mailbox string, uidValidity uint32, live func(uid uint32) bool, upTo uint32) {
	if u := s.user(ctx, user); u != nil {
		u.prune(mailbox, uidValidity, live, upTo)
	}
}

// Flush waits until every Put and Prune made so far is written.
func (s *Store) Flush() {
	s.mu.Lock()
	us := make([]userStore, 0, len(s.users))
	for _, u := range s.users {
		us = append(us, u)
	}
	s.mu.Unlock()
	for _, u := range us {
		u.flush()
	}
}

// Stats returns user's statistics (opening the user's store).
func (s *Store) Stats(ctx context.Context, user string) (Stats, bool) {
	u := s.user(ctx, user)
	if u == nil {
		return Stats{}, false
	}
	return u.stats(), true
}

// Close writes what is queued and closes every file.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	us := s.users
	s.users = map[string]userStore{}
	s.mu.Unlock()
	var errs []error
	for _, u := range us {
		errs = append(errs, u.close())
	}
	return errors.Join(errs...)
}

// StatFile returns the statistics of user's file in dir, without its key (the counters are not secret). It
// fails while a running proxy holds the file, and with an error satisfying os.IsNotExist when there is none.
func StatFile(dir, user string) (Stats, error) {
	path := filepath.Join(dir, FileName(user))
	fi, err := os.Stat(path)
	if err != nil {
		return Stats{}, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return Stats{FileBytes: fi.Size()}, fmt.Errorf("metastore: %s is in use by a running proxy", path)
		}
		return Stats{}, fmt.Errorf("metastore: %w", err)
	}
	defer db.Close()
	st := Stats{FileBytes: fi.Size()}
	err = db.View(func(tx *bolt.Tx) error {
		s := tx.Bucket(bucketState)
		if s == nil {
			return nil
		}
		st.Entries = int(u64(s.Get([]byte("count"))))
		st.Bytes = int64(u64(s.Get([]byte("bytes"))))
		return nil
	})
	return st, err
}

// RemoveFile deletes user's file in dir (`smimeproxy cache clear`). It refuses while a running proxy holds it.
func RemoveFile(dir, user string) error {
	path := filepath.Join(dir, FileName(user))
	if _, err := os.Stat(path); err != nil {
		return err
	}
	return Rotate(dir, user, nil)
}

// Rotate is the key rotation of user's store (`smimeproxy cache rotate-key`): holding the file's lock, so
// that no proxy can be writing under the old key, it calls replaceKey (which replaces the user's key in
// Vault), then deletes the file. The store is derived data: the proxy rebuilds it under the new key on the
// next sync. The order is crash-safe: killed after the new key is written but before the file is gone, the
// file no longer opens under the new key and the next open starts it afresh. With no file only replaceKey
// runs; with a nil replaceKey the file is only deleted. It refuses while a running proxy holds the file.
func Rotate(dir, user string, replaceKey func() error) error {
	path := filepath.Join(dir, FileName(user))
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if replaceKey == nil {
			return nil
		}
		return replaceKey()
	} else if err != nil {
		return fmt.Errorf("metastore: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("metastore: %s is in use by a running proxy; stop it first", path)
		}
		return fmt.Errorf("metastore: %w", err)
	}
	defer db.Close()
	if replaceKey != nil {
		if err := replaceKey(); err != nil {
			return err
		}
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("metastore: %w", err)
	}
	return nil
}
