package keystore

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// The address book: a user's correspondents' public certificates, per email address, used to encrypt to them
// and to judge their signatures. It holds no private keys.
//
// Rules every AddressBook implementation follows (PlanAdd decides them, so all implementations agree):
//   - Addresses are normalized with NormalizeAddress (the whole address folded to lower case).
//   - Adding a certificate that is already there (same address and fingerprint) changes nothing unless it
//     brings a higher trust, an import over a harvest, or new SMIMECapabilities; trust is never lowered by Add
//     (only SetTrust lowers it).
//   - Preference (Certificates' order, see SortContacts): certificates valid now first, then trusted (TrustUser
//     or TrustChain) before untrusted, then the newest (latest NotBefore). So a trusted certificate is never
//     displaced by an untrusted one, and a renewed certificate of the same trust takes over.
//   - At most MaxContactsPerAddress certificates per address: adding one more evicts the least preferred
//     (expired and untrusted first, then the oldest); when that is the new certificate itself, Add fails with
//     ErrBookFull and stores nothing.

// Trust levels of an address-book certificate, as stored.
const (
	TrustNone  = "none"  // nothing vouches for it (a harvested self-signed or unknown-CA certificate)
	TrustChain = "chain" // it verified to a trusted root for email protection when it was added
	TrustUser  = "user"  // the user marked it trusted (certs trust, or certs import --trust)
)

// Sources of an address-book certificate.
const (
	SourceImport  = "import"    // certs import
	SourceHarvest = "harvested" // taken from a verified signature
)

// MaxContactsPerAddress bounds the certificates kept per address.
const MaxContactsPerAddress = 10

// maxAddressLen is the longest address accepted: a forward-path is at most 256 octets including the angle
// brackets (RFC 5321 section 4.5.3.1.3).
const maxAddressLen = 254

// Errors of the address book (wrapped with detail; compare with errors.Is).
var (
	ErrNoAddress        = errors.New("keystore: certificate has no email address")
	ErrBadAddress       = errors.New("keystore: invalid email address")
	ErrContactNotFound  = errors.New("keystore: certificate not in the address book")
	ErrBookFull         = errors.New("keystore: address book full for this address")
	ErrBadTrust         = errors.New("keystore: invalid trust level")
	errContactNoCert    = errors.New("keystore: no certificate")
	errContactBadSource = errors.New("keystore: invalid source")
)

// Contact is one certificate of one address in a user's address book. Safe to print.
type Contact struct {
	Address     string // normalized (NormalizeAddress)
	Cert        *x509.Certificate
	Fingerprint string    // Fingerprint(Cert)
	Trust       string    // TrustNone, TrustChain or TrustUser
	Source      string    // SourceImport or SourceHarvest
	Added       time.Time // when it was first stored
	// Capabilities is the DER SMIMECapabilities attribute value (RFC 8551 section 2.5.2) from the peer's
	// latest signature with this certificate: the ciphers the peer accepts. Empty when unknown (imports).
	Capabilities []byte
}

// ValidAt reports whether c's certificate is within its validity period at t.
func (c Contact) ValidAt(t time.Time) bool {
	return c.Cert != nil && !t.Before(c.Cert.NotBefore) && !t.After(c.Cert.NotAfter)
}

// Trusted reports whether c's trust is TrustChain or TrustUser.
func (c Contact) Trusted() bool { return c.Trust == TrustChain || c.Trust == TrustUser }

// AddOptions describe a certificate being added.
type AddOptions struct {
	Trust        string // TrustNone (default when empty), TrustChain or TrustUser
	Source       string // SourceImport (default when empty) or SourceHarvest
	Capabilities []byte // DER SMIMECapabilities, see Contact.Capabilities
}

// AddressBook holds users' correspondents' certificates. A user's book is only ever read or changed for that
// user. Implementations are safe for concurrent use.
type AddressBook interface {
	// Certificates returns user's certificates for address, preferred first (see SortContacts); none is not
	// an error.
	Certificates(ctx context.Context, user, address string) ([]Contact, error)
	// Add stores cert under each of its email addresses (CertAddresses) and returns the stored entries. It fails
	// with ErrNoAddress when the certificate names none, ErrBookFull when an address is full of preferred
	// certificates (the other addresses are still stored).
	Add(ctx context.Context, user string, cert *x509.Certificate, opts AddOptions) ([]Contact, error)
	// Remove deletes one certificate of address; ErrContactNotFound when there is none.
	Remove(ctx context.Context, user, address, fingerprint string) error
	// SetTrust sets the trust of one certificate of address (raising or lowering it) and returns the entry.
	SetTrust(ctx context.Context, user, address, fingerprint, trust string) (Contact, error)
	// List returns all of user's certificates, by address and, per address, preferred first.
	List(ctx context.Context, user string) ([]Contact, error)
}

// NormalizeAddress returns addr (a bare addr-spec, RFC 5322 section 3.4.1) in the form the address book keys on:
// surrounding space removed, a trailing dot of the domain removed, and the whole address folded to lower case.
// RFC 5321 section 2.4 lets the receiving host treat the local part as case-sensitive, but also says exploiting
// that "impedes interoperability and is discouraged"; certificates and From lines spell the same mailbox with
// different case often enough that a case-sensitive book would miss. It fails with ErrBadAddress when addr is
// not user@domain, is longer than 254 octets or contains white space, control characters or "<>,".
func NormalizeAddress(addr string) (string, error) {
	a := strings.TrimSpace(addr)
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return "", fmt.Errorf("%w %q: want local-part@domain", ErrBadAddress, addr)
	}
	if !utf8.ValidString(a) {
		return "", fmt.Errorf("%w: not UTF-8", ErrBadAddress)
	}
	for _, r := range a {
		if r <= ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || strings.ContainsRune("<>,", r) {
			return "", fmt.Errorf("%w %q: white space, control characters and <>, are not allowed", ErrBadAddress, addr)
		}
	}
	local, domain := a[:at], strings.TrimSuffix(a[at+1:], ".")
	if domain == "" || strings.HasPrefix(domain, ".") || strings.Contains(domain, "..") {
		return "", fmt.Errorf("%w %q: bad domain", ErrBadAddress, addr)
	}
	a = strings.ToLower(local + "@" + domain)
	if len(a) > maxAddressLen {
		return "", fmt.Errorf("%w: longer than %d octets", ErrBadAddress, maxAddressLen)
	}
	return a, nil
}

// oidEmailAddress is the legacy emailAddress attribute of a subject name (PKCS #9; RFC 5280 section 4.1.2.6
// says conforming CAs put addresses in the subjectAltName instead, but NSS-made and older certificates carry it).
var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// CertAddresses returns the normalized email addresses cert is for: its subjectAltName rfc822Names (RFC 5280
// section 4.2.1.6; RFC 8550 section 3) and, as RFC 8550 section 3 allows for older certificates, the
// emailAddress attributes of its subject, without duplicates. Addresses that NormalizeAddress refuses are left
// out.
func CertAddresses(cert *x509.Certificate) []string {
	var raw []string
	raw = append(raw, cert.EmailAddresses...)
	for _, atv := range cert.Subject.Names {
		if s, ok := atv.Value.(string); ok && atv.Type.Equal(oidEmailAddress) {
			raw = append(raw, s)
		}
	}
	var out []string
	for _, r := range raw {
		a, err := NormalizeAddress(r)
		if err == nil && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// trustRank orders trust levels for Add's "never lower" rule.
func trustRank(t string) int {
	switch t {
	case TrustUser:
		return 2
	case TrustChain:
		return 1
	}
	return 0
}

// CheckTrust fails with ErrBadTrust unless t is one of the Trust constants.
func CheckTrust(t string) error {
	switch t {
	case TrustNone, TrustChain, TrustUser:
		return nil
	}
	return fmt.Errorf("%w %q: want %s, %s or %s", ErrBadTrust, t, TrustUser, TrustChain, TrustNone)
}

// SortContacts orders the certificates of one address by preference at now: valid ones first, then trusted
// (TrustUser or TrustChain) before untrusted, then the latest NotBefore, then the latest NotAfter; the
// fingerprint breaks ties so the order is stable.
func SortContacts(cs []Contact, now time.Time) {
	slices.SortStableFunc(cs, func(a, b Contact) int { return comparePreference(a, b, now) })
}

// comparePreference is negative when a is preferred over b.
func comparePreference(a, b Contact, now time.Time) int {
	if va, vb := a.ValidAt(now), b.ValidAt(now); va != vb {
		if va {
			return -1
		}
		return 1
	}
	if ta, tb := a.Trusted(), b.Trusted(); ta != tb {
		if ta {
			return -1
		}
		return 1
	}
	if c := b.Cert.NotBefore.Compare(a.Cert.NotBefore); c != 0 {
		return c
	}
	if c := b.Cert.NotAfter.Compare(a.Cert.NotAfter); c != 0 {
		return c
	}
	return strings.Compare(a.Fingerprint, b.Fingerprint)
}

// NewContact makes the entry for cert under address (normalized by the caller) with opts, checking opts.
func NewContact(address string, cert *x509.Certificate, opts AddOptions, now time.Time) (Contact, error) {
	if cert == nil {
		return Contact{}, errContactNoCert
	}
	c := Contact{Address: address, Cert: cert, Fingerprint: Fingerprint(cert), Trust: opts.Trust, Source: opts.Source,
		Added: now.UTC().Truncate(time.Second), Capabilities: bytes.Clone(opts.Capabilities)}
	if c.Trust == "" {
		c.Trust = TrustNone
	}
	if c.Source == "" {
		c.Source = SourceImport
	}
	if err := CheckTrust(c.Trust); err != nil {
		return Contact{}, err
	}
	if c.Source != SourceImport && c.Source != SourceHarvest {
		return Contact{}, fmt.Errorf("%w %q", errContactBadSource, c.Source)
	}
	return c, nil
}

// AddPlan is what an AddressBook must do to add one certificate to one address (see PlanAdd).
type AddPlan struct {
	Store Contact  // the entry as it must be stored
	Write bool     // whether Store differs from what is stored (false: nothing to do)
	Evict []string // fingerprints of the same address to delete after writing Store
}

// PlanAdd applies the address-book rules to adding c to an address whose current certificates are existing
// (all of that one address, any order): merging with an entry of the same fingerprint (trust never lowered, an
// import wins over a harvest, new capabilities replace old ones, the first Added time kept) or, for a new
// certificate, evicting the least preferred beyond MaxContactsPerAddress. It fails with ErrBookFull when the new
// certificate would itself be evicted.
func PlanAdd(existing []Contact, c Contact, now time.Time) (AddPlan, error) {
	for _, old := range existing {
		if old.Fingerprint != c.Fingerprint {
			continue
		}
		m := old
		if trustRank(c.Trust) > trustRank(m.Trust) {
			m.Trust = c.Trust
		}
		if c.Source == SourceImport {
			m.Source = SourceImport
		}
		if len(c.Capabilities) > 0 {
			m.Capabilities = bytes.Clone(c.Capabilities)
		}
		write := m.Trust != old.Trust || m.Source != old.Source || !bytes.Equal(m.Capabilities, old.Capabilities)
		return AddPlan{Store: m, Write: write}, nil
	}
	all := append(slices.Clone(existing), c)
	SortContacts(all, now)
	var evict []string
	for _, e := range all[min(len(all), MaxContactsPerAddress):] {
		if e.Fingerprint == c.Fingerprint {
			return AddPlan{}, fmt.Errorf("%w: %s has %d certificates preferred over %s", ErrBookFull, c.Address, MaxContactsPerAddress, c.Fingerprint[:16])
		}
		evict = append(evict, e.Fingerprint)
	}
	return AddPlan{Store: c, Write: true, Evict: evict}, nil
}
