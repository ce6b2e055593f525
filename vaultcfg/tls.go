package vaultcfg

import (
	"context"
	"fmt"
	"strings"
)

// tlsDir is the folder under the prefix that holds the proxy's own client-facing TLS certificates. User names
// cannot start with a dot (ValidateUser), so it never collides with a user's keys.
const tlsDir = ".tls"

// validTLSName accepts the names serve uses (a listen host such as "127.0.0.1", "::1" or "mail.example.lan").
func validTLSName(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, "/\\ \t\r\n*") || name == "." || name == ".." {
		return fmt.Errorf("vaultcfg: invalid tls certificate name %q", name)
	}
	return nil
}

// ReadTLSCert returns the client-facing TLS certificate chain and private key (PEM) stored under name at
// <prefix>/.tls/<name> in the KV mount, or empty slices (and no error) when none is stored yet. It fails with
// the usual error classes (ErrUnreachable, ErrPermissionDenied, ...).
func (s *Store) ReadTLSCert(ctx context.Context, name string) (certPEM, keyPEM []byte, err error) {
	if err := validTLSName(name); err != nil {
		return nil, nil, err
	}
	sec, err := s.c.read(ctx, s.apiPath("data", s.cfg.Prefix+"/"+tlsDir+"/"+name))
	if err != nil {
		return nil, nil, err
	}
	if sec == nil || sec.Data == nil {
		return nil, nil, nil
	}
	data, _ := sec.Data["data"].(map[string]any)
	c, _ := data["certificate"].(string)
	k, _ := data["private_key"].(string)
	return []byte(c), []byte(k), nil
}

// WriteTLSCert stores a client-facing TLS certificate chain and key (PEM) under name (see ReadTLSCert), as a new
// KV version.
func (s *Store) WriteTLSCert(ctx context.Context, name string, certPEM, keyPEM []byte) error {
	if err := validTLSName(name); err != nil {
		return err
	}
	p := s.apiPath("data", s.cfg.Prefix+"/"+tlsDir+"/"+name)
	_, err := s.c.write(ctx, "write", p, map[string]any{"data": map[string]any{
		"certificate": string(certPEM), "private_key": string(keyPEM)}})
	return err
}
