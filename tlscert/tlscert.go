package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// DefaultValidity is how long a generated certificate is valid.
const DefaultValidity = 365 * 24 * time.Hour

// clockSkew backdates NotBefore so that a client whose clock is slightly behind accepts a fresh certificate.
const clockSkew = time.Hour

// DefaultHosts are the subject alternative names of a generated certificate.
var DefaultHosts = []string{"127.0.0.1", "::1", "localhost"}

// Errors.
var (
	ErrMismatch        = errors.New("tlscert: certificate and private key do not match")
	ErrPlaintextRemote = errors.New("tlscert: a listener on a non-loopback address requires TLS (give --tls-cert/--tls-key or generate a certificate)")
)

// Cert is a server certificate with its private key. KeyPEM is secret: store it only where private keys belong
// (Vault), never log it.
type Cert struct {
	CertPEM []byte // "CERTIFICATE" block(s), leaf first
	KeyPEM  []byte // "PRIVATE KEY" (PKCS #8) block
	Leaf    *x509.Certificate
	tls     tls.Certificate
}

// Options configure Generate. The zero value gives the defaults.
type Options struct {
	Hosts    []string         // IP addresses and DNS names; DefaultHosts if empty
	Validity time.Duration    // DefaultValidity if zero
	Now      func() time.Time // time.Now if nil
}

// Generate creates a self-signed ECDSA P-256 leaf certificate (RFC 5280 section 4.2.1.9: basic constraints
// cA=false; section 4.2.1.12: extended key usage id-kp-serverAuth; section 4.2.1.6: the hosts as subject
// alternative names). It fails only if the system's random source does or a host name is empty.
func Generate(o Options) (*Cert, error) {
	hosts := o.Hosts
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	validity := o.Validity
	if validity <= 0 {
		validity = DefaultValidity
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlscert: generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("tlscert: generating serial: %w", err)
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)), // positive, RFC 5280 section 4.1.2.2
		Subject:               pkix.Name{CommonName: "smimeproxy local IMAP", Organization: []string{"smimeproxy"}},
		NotBefore:             t.Add(-clockSkew),
		NotAfter:              t.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			return nil, errors.New("tlscert: empty host name")
		}
		if ip, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("tlscert: creating certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("tlscert: encoding key: %w", err)
	}
	return Parse(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}))
}

// Parse builds a Cert from PEM certificate(s) (leaf first, then intermediates) and a PEM private key (PKCS #8,
// PKCS #1 or SEC 1). It fails when either does not parse or they do not match (ErrMismatch).
func Parse(certPEM, keyPEM []byte) (*Cert, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return nil, ErrMismatch
		}
		// tls's messages never include key bytes; keep them single-line and prefixed.
		return nil, fmt.Errorf("tlscert: %v", strings.TrimPrefix(err.Error(), "tls: "))
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tlscert: %w", err)
		}
	}
	return &Cert{CertPEM: certPEM, KeyPEM: keyPEM, Leaf: c.Leaf, tls: c}, nil
}

// Load reads a certificate and key from PEM files (see Parse). Errors name the file.
func Load(certFile, keyFile string) (*Cert, error) {
	cp, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tlscert: %w", err)
	}
	kp, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlscert: %w", err)
	}
	c, err := Parse(cp, kp)
	if err != nil {
		return nil, fmt.Errorf("%w (files %s, %s)", err, certFile, keyFile)
	}
	return c, nil
}

// LoadOrGenerate loads the files when both are given, generates a certificate with the default options when
// neither is, and fails when only one is.
func LoadOrGenerate(certFile, keyFile string) (c *Cert, generated bool, err error) {
	switch {
	case certFile != "" && keyFile != "":
		c, err = Load(certFile, keyFile)
		return c, false, err
	case certFile == "" && keyFile == "":
		c, err = Generate(Options{})
		return c, true, err
	}
	return nil, false, errors.New("tlscert: give both a certificate file and a key file, or neither to generate one")
}

// Fingerprint returns the SHA-256 fingerprint of the leaf, as colon-separated upper-case hex (what mail clients
// show when asking whether to trust a certificate).
func (c *Cert) Fingerprint() string {
	sum := sha256.Sum256(c.Leaf.Raw)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// ExpiresWithin reports whether the leaf expires (or has expired) within d of now.
func (c *Cert) ExpiresWithin(now time.Time, d time.Duration) bool {
	return !now.Add(d).Before(c.Leaf.NotAfter)
}

// ServerConfig returns a server *tls.Config presenting c, accepting TLS 1.2 and 1.3 (RFC 8996: no 1.0/1.1).
// The cipher suites are Go's defaults (forward secrecy, AEAD only for TLS 1.2).
func ServerConfig(c *Cert) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.tls},
	}
}

// IsLoopback reports whether a listen address (host:port) is on a loopback interface: a loopback IP or
// "localhost". An empty host (all interfaces) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// CheckListen applies the listening policy: plaintext is allowed on loopback only; elsewhere TLS (implicit or
// STARTTLS) is required, and ErrPlaintextRemote is returned without it.
func CheckListen(addr string, haveTLS bool) error {
	if haveTLS || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrPlaintextRemote, addr)
}

// RenewBefore is how long before expiry Ensure replaces a stored certificate.
const RenewBefore = 30 * 24 * time.Hour

// Ensure returns the stored certificate (certPEM, keyPEM, e.g. read from Vault) when it parses, matches its key,
// covers every host of o and stays valid for more than RenewBefore; otherwise it generates a new one (generated
// is then true and the caller should store the new PEM bytes). Empty input means nothing is stored yet. It fails
// only when generating fails.
func Ensure(certPEM, keyPEM []byte, o Options) (c *Cert, generated bool, reason string, err error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	reason = "none stored"
	if len(certPEM) > 0 || len(keyPEM) > 0 {
		stored, perr := Parse(certPEM, keyPEM)
		switch {
		case perr != nil:
			reason = "stored certificate unusable: " + perr.Error()
		case !now().Add(RenewBefore).Before(stored.Leaf.NotAfter):
			reason = "stored certificate expires on " + stored.Leaf.NotAfter.UTC().Format("2006-01-02")
		default:
			reason = coversHosts(stored.Leaf, o.Hosts)
			if reason == "" {
				return stored, false, "", nil
			}
		}
	}
	c, err = Generate(o)
	if err != nil {
		return nil, false, reason, err
	}
	return c, true, reason, nil
}

// coversHosts returns "" when leaf is valid for every host (DefaultHosts if none), else which one it lacks.
func coversHosts(leaf *x509.Certificate, hosts []string) string {
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	for _, h := range hosts {
		if err := leaf.VerifyHostname(h); err != nil {
			return "stored certificate is not valid for " + h
		}
	}
	return ""
}
