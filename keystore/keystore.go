package keystore

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

// Storage kinds of a key.
const (
	StorageKV      = "kv"      // private key (PKCS#8) in Vault KV v2
	StorageTransit = "transit" // RSA private key in Vault Transit; only the certificate is in KV
	StorageMemory  = "memory"  // in-process (demo, tests)
)

// ErrNotFound is returned (wrapped) when a user has no key with the given ID.
var ErrNotFound = errors.New("keystore: key not found")

// Key is a usable private key with its certificate. Private is a crypto.Decrypter for RSA (possibly remote, e.g.
// Vault Transit) or a cms key-agreement key for EC/X25519/X448 (see package cms).
type Key struct {
	Entry
	Cert    *x509.Certificate
	Chain   []*x509.Certificate // Cert first
	Private crypto.PrivateKey
}

// Entry describes a stored key without its private part; safe to print.
type Entry struct {
	ID           string // derived from the certificate: see IDOf
	Fingerprint  string // SHA-256 of the certificate DER, hex
	Subject      string
	Emails       []string
	NotBefore    time.Time
	NotAfter     time.Time
	RecipientIDs []string // cms.RecipientID.Key() values
	Storage      string
}

// Store holds users' S/MIME keys. A user's keys are only ever returned for that user. Implementations are safe
// for concurrent use.
type Store interface {
	// Lookup returns user's keys whose certificate matches any of ids (RFC 5652 section 6.2.1), in no
	// particular order; none is not an error. A key whose operations are remote calls (a Vault Transit key:
	// crypto.Decrypter and crypto.Signer take no context) comes bound to ctx, so its calls stop when the
	// request that looked it up goes away: use the keys within that request.
	Lookup(ctx context.Context, user string, ids []cms.RecipientID) ([]Key, error)
	// List returns all of user's keys.
	List(ctx context.Context, user string) ([]Entry, error)
	// Put stores key with its certificate chain (leaf first) for user and returns its entry. Putting the same
	// certificate again is idempotent.
	Put(ctx context.Context, user string, chain []*x509.Certificate, key crypto.PrivateKey, opts PutOptions) (Entry, error)
	// Remove deletes user's key id; ErrNotFound when there is none.
	Remove(ctx context.Context, user, id string) error
}

// PutOptions tune Put.
type PutOptions struct {
	// Transit stores an RSA key in Vault Transit instead of KV. Stores that have no Transit refuse it.
	Transit bool
}
