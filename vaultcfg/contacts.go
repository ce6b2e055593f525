package vaultcfg

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/smimeproxy/smimeproxy/keystore"
)

// Contacts is the keystore.AddressBook in Vault, beside the keys of the same Store: one KV v2 secret per
// certificate and address at <kv-mount>/data/<prefix>/<user>/contacts/<address>/<fingerprint>, holding the
// certificate (PEM), its trust, source, first-added time and the peer's SMIMECapabilities. <address> is the
// normalized address (keystore.NormalizeAddress) with every octet other than a-z, 0-9 and "@_+-" (and "."
// except at the start) written as "=XX", so an address is always one path segment and never "." or "..".
// Listing a user's keys skips the contacts/ folder (key ids are hex). Nothing is cached: the book is read when
// asked. Obtain it with Store.Contacts; it lives as long as the Store.
type Contacts struct{ s *Store }

var _ keystore.AddressBook = (*Contacts)(nil)

// Contacts returns the address book kept in the same Vault, mount and prefix as the keys.
func (s *Store) Contacts() *Contacts { return &Contacts{s: s} }

// contactsFolder is the folder under a user's key folder holding the address book.
const contactsFolder = "contacts"

// Secret field names of an address-book entry.
const (
	fieldContactAddress = "address"
	fieldContactCert    = "certificate"
	fieldContactIssuer  = "issuer"
	fieldContactTrust   = "trust"
	fieldContactSource  = "source"
	fieldContactAdded   = "added"
	fieldContactCaps    = "smime_capabilities" // base64 DER
)

// escapeAddress makes a normalized address one safe KV path segment (see Contacts).
func escapeAddress(a string) string {
	var b strings.Builder
	for i := 0; i < len(a); i++ {
		c := a[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("@_+-", c) >= 0 || (c == '.' && i > 0) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	return b.String()
}

// validateFingerprint checks a full SHA-256 fingerprint (keystore.Fingerprint: 64 lowercase hex digits).
func validateFingerprint(fp string) error {
	if len(fp) != 64 || strings.Trim(fp, "0123456789abcdef") != "" {
		return fmt.Errorf("vaultcfg: invalid certificate fingerprint %q: want the 64 hex digits of its SHA-256", fp)
	}
	return nil
}

func (b *Contacts) dir(user string) string { return b.s.userDir(user) + "/" + contactsFolder }
func (b *Contacts) addrDir(user, addr string) string {
	return b.dir(user) + "/" + escapeAddress(addr)
}
func (b *Contacts) path(user, addr, fp string) string { return b.addrDir(user, addr) + "/" + fp }

// args validates user and normalizes address.
func (b *Contacts) args(user, address string) (string, error) {
	if err := ValidateUser(user); err != nil {
		return "", err
	}
	return keystore.NormalizeAddress(address)
}

// Certificates implements keystore.AddressBook.
func (b *Contacts) Certificates(ctx context.Context, user, address string) ([]keystore.Contact, error) {
	addr, err := b.args(user, address)
	if err != nil {
		return nil, err
	}
	out, err := b.readAddress(ctx, user, addr)
	if err != nil {
		return nil, err
	}
	keystore.SortContacts(out, b.s.now())
	return out, nil
}

// readAddress reads all entries of one address, in no particular order. An entry that does not parse is
// logged and skipped.
func (b *Contacts) readAddress(ctx context.Context, user, addr string) ([]keystore.Contact, error) {
	fps, err := b.listNames(ctx, b.addrDir(user, addr), false)
	if err != nil {
		return nil, err
	}
	var out []keystore.Contact
	for _, fp := range fps {
		c, err := b.read(ctx, user, addr, fp)
		switch {
		case errors.Is(err, keystore.ErrContactNotFound):
			continue // removed meanwhile
		case errors.Is(err, errBadContact):
			b.s.log.Warn("skipping unusable address-book entry in vault", "path", b.s.apiPath("data", b.path(user, addr, fp)), "err", err)
			continue
		case err != nil:
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// listNames LISTs a KV metadata folder: with folders, the sub-folder names (without "/"), else the entries that
// are fingerprints. None is not an error.
func (b *Contacts) listNames(ctx context.Context, dir string, folders bool) ([]string, error) {
	sec, err := b.s.c.list(ctx, b.s.apiPath("metadata", dir))
	if err != nil || sec == nil || sec.Data == nil {
		return nil, err
	}
	raw, _ := sec.Data["keys"].([]any)
	var out []string
	for _, v := range raw {
		name, _ := v.(string)
		if folders {
			if n, ok := strings.CutSuffix(name, "/"); ok && n != "" {
				out = append(out, n)
			}
		} else if validateFingerprint(name) == nil {
			out = append(out, name)
		}
	}
	return out, nil
}

var errBadContact = errors.New("unusable address-book entry")

// read reads one entry; keystore.ErrContactNotFound when there is none, errBadContact (wrapped) when it does not
// parse or does not match its path.
func (b *Contacts) read(ctx context.Context, user, addr, fp string) (keystore.Contact, error) {
	p := b.s.apiPath("data", b.path(user, addr, fp))
	sec, err := b.s.c.read(ctx, p)
	if err != nil {
		return keystore.Contact{}, err
	}
	var data map[string]any
	if sec != nil && sec.Data != nil {
		data, _ = sec.Data["data"].(map[string]any)
	}
	if data == nil {
		return keystore.Contact{}, fmt.Errorf("%w: %s", keystore.ErrContactNotFound, p)
	}
	str := func(k string) string { v, _ := data[k].(string); return v }
	bad := func(why string) (keystore.Contact, error) {
		return keystore.Contact{}, fmt.Errorf("vaultcfg: %s: %w: %s", p, errBadContact, why)
	}
	blk, _ := pem.Decode([]byte(str(fieldContactCert)))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return bad("no certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return bad("certificate does not parse")
	}
	c := keystore.Contact{Address: str(fieldContactAddress), Cert: cert, Fingerprint: keystore.Fingerprint(cert),
		Trust: str(fieldContactTrust), Source: str(fieldContactSource)}
	if c.Fingerprint != fp || c.Address != addr {
		return bad("certificate or address does not match the path")
	}
	if keystore.CheckTrust(c.Trust) != nil {
		c.Trust = keystore.TrustNone // an unknown trust level vouches for nothing
	}
	c.Added, _ = time.Parse(time.RFC3339, str(fieldContactAdded))
	if s := str(fieldContactCaps); s != "" {
		if c.Capabilities, err = base64.StdEncoding.DecodeString(s); err != nil {
			return bad("smime_capabilities is not base64")
		}
	}
	return c, nil
}

// write stores c.
func (b *Contacts) write(ctx context.Context, user string, c keystore.Contact) error {
	data := map[string]any{
		fieldContactAddress: c.Address,
		fieldContactCert:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})),
		fieldFingerprint:    c.Fingerprint,
		fieldSubject:        c.Cert.Subject.String(),
		fieldContactIssuer:  c.Cert.Issuer.String(),
		fieldNotBefore:      c.Cert.NotBefore.UTC().Format(time.RFC3339),
		fieldNotAfter:       c.Cert.NotAfter.UTC().Format(time.RFC3339),
		fieldContactTrust:   c.Trust,
		fieldContactSource:  c.Source,
		fieldContactAdded:   c.Added.UTC().Format(time.RFC3339),
	}
	if len(c.Capabilities) > 0 {
		data[fieldContactCaps] = base64.StdEncoding.EncodeToString(c.Capabilities)
	}
	_, err := b.s.c.write(ctx, "write", b.s.apiPath("data", b.path(user, c.Address, c.Fingerprint)), map[string]any{"data": data})
	return err
}

// del destroys all versions of one entry.
func (b *Contacts) del(ctx context.Context, user, addr, fp string) error {
	return b.s.c.del(ctx, b.s.apiPath("metadata", b.path(user, addr, fp)))
}

// Add implements keystore.AddressBook (rules in keystore.PlanAdd). Adding a certificate already stored as it
// is costs one read and writes nothing to Vault. A new certificate is written before the ones it evicts are
// deleted (metadata delete, all versions); an eviction that fails is logged, not returned, so a failure never
// loses the newer certificate.
func (b *Contacts) Add(ctx context.Context, user string, cert *x509.Certificate, opts keystore.AddOptions) ([]keystore.Contact, error) {
	if err := ValidateUser(user); err != nil {
		return nil, err
	}
	if cert == nil {
		return nil, errors.New("vaultcfg: no certificate")
	}
	addrs := keystore.CertAddresses(cert)
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: %s", keystore.ErrNoAddress, cert.Subject)
	}
	now := b.s.now()
	var out []keystore.Contact
	var full []error
	for _, addr := range addrs {
		c, err := keystore.NewContact(addr, cert, opts, now)
		if err != nil {
			return out, err
		}
		// The common case, a harvest of a known certificate, costs one read.
		var existing []keystore.Contact
		old, err := b.read(ctx, user, addr, c.Fingerprint)
		switch {
		case err == nil:
			existing = []keystore.Contact{old}
		case errors.Is(err, keystore.ErrContactNotFound) || errors.Is(err, errBadContact):
			if existing, err = b.readAddress(ctx, user, addr); err != nil {
				return out, err
			}
		default:
			return out, err
		}
		plan, err := keystore.PlanAdd(existing, c, now)
		if errors.Is(err, keystore.ErrBookFull) {
			full = append(full, err)
			continue
		}
		if err != nil {
			return out, err
		}
		if plan.Write {
			if err := b.write(ctx, user, plan.Store); err != nil {
				return out, err
			}
			b.s.log.Info("stored address-book certificate", "user", user, "address", addr, "fingerprint", plan.Store.Fingerprint[:16], "trust", plan.Store.Trust, "source", plan.Store.Source)
		}
		for _, fp := range plan.Evict {
			// The new certificate is stored; a failed eviction (e.g. a token without delete on the contacts
			// metadata) only leaves the address over its bound until a later Add evicts again.
			if err := b.del(ctx, user, addr, fp); err != nil {
				b.s.log.Warn("could not evict address-book certificate", "user", user, "address", addr, "fingerprint", fp[:16], "err", err)
				continue
			}
			b.s.log.Info("evicted address-book certificate", "user", user, "address", addr, "fingerprint", fp[:16])
		}
		out = append(out, plan.Store)
	}
	return out, errors.Join(full...)
}

// Remove implements keystore.AddressBook: it destroys all versions of the entry.
func (b *Contacts) Remove(ctx context.Context, user, address, fingerprint string) error {
	addr, err := b.args(user, address)
	if err != nil {
		return err
	}
	if err := validateFingerprint(fingerprint); err != nil {
		return err
	}
	// Read first: deleting a missing path succeeds in Vault, and an unusable entry may still be removed.
	if _, err := b.read(ctx, user, addr, fingerprint); err != nil && !errors.Is(err, errBadContact) {
		return err
	}
	if err := b.del(ctx, user, addr, fingerprint); err != nil {
		return err
	}
	b.s.log.Info("removed address-book certificate", "user", user, "address", addr, "fingerprint", fingerprint[:16])
	return nil
}

// SetTrust implements keystore.AddressBook.
func (b *Contacts) SetTrust(ctx context.Context, user, address, fingerprint, trust string) (keystore.Contact, error) {
	addr, err := b.args(user, address)
	if err != nil {
		return keystore.Contact{}, err
	}
	if err := validateFingerprint(fingerprint); err != nil {
		return keystore.Contact{}, err
	}
	if err := keystore.CheckTrust(trust); err != nil {
		return keystore.Contact{}, err
	}
	c, err := b.read(ctx, user, addr, fingerprint)
	if err != nil {
		return keystore.Contact{}, err
	}
	if c.Trust == trust {
		return c, nil
	}
	c.Trust = trust
	if err := b.write(ctx, user, c); err != nil {
		return keystore.Contact{}, err
	}
	b.s.log.Info("set address-book trust", "user", user, "address", addr, "fingerprint", fingerprint[:16], "trust", trust)
	return c, nil
}

// List implements keystore.AddressBook; it reads every entry of the user's book from Vault.
func (b *Contacts) List(ctx context.Context, user string) ([]keystore.Contact, error) {
	if err := ValidateUser(user); err != nil {
		return nil, err
	}
	folders, err := b.listNames(ctx, b.dir(user), true)
	if err != nil {
		return nil, err
	}
	now := b.s.now()
	var out []keystore.Contact
	var addrs []string
	byAddr := map[string][]keystore.Contact{}
	for _, f := range folders {
		addr, ok := unescapeAddress(f)
		if !ok {
			b.s.log.Warn("skipping address-book folder that does not name an address", "path", b.s.apiPath("metadata", b.dir(user)+"/"+f))
			continue
		}
		cs, err := b.readAddress(ctx, user, addr)
		if err != nil {
			return nil, err
		}
		keystore.SortContacts(cs, now)
		byAddr[addr] = cs
		addrs = append(addrs, addr)
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		out = append(out, byAddr[a]...)
	}
	return out, nil
}

// unescapeAddress reverses escapeAddress; ok is false when folder is not an escaped normalized address.
func unescapeAddress(folder string) (addr string, ok bool) {
	var b strings.Builder
	for i := 0; i < len(folder); i++ {
		if folder[i] != '=' {
			b.WriteByte(folder[i])
			continue
		}
		if i+2 >= len(folder) {
			return "", false
		}
		v, err := strconv.ParseUint(folder[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(v))
		i += 2
	}
	addr = b.String()
	norm, err := keystore.NormalizeAddress(addr)
	return addr, err == nil && norm == addr && escapeAddress(addr) == folder
}
