package vaultcfg

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// tlsDir is the folder under the prefix that holds the proxy's own client-facing TLS certificates. User names
// cannot start with a dot (ValidateUser), so it never collides with a user's keys.
const tlsDir = ".tls"

// statePath is where the proxy keeps its own state rel (e.g. ".tls/127.0.0.1"), below the KV mount: shared
// beside the users' keys at <prefix>/<rel> for a Store of all users, or inside the one user's subtree at
// <prefix>/<user>/<rel> when Config.User is set, so that a per-user token (UserPolicy) can write its own state
// and nobody else's. Inside a user's subtree rel cannot clash with a key: key ids are hex without a dot.
func (s *Store) statePath(rel string) string {
	if s.cfg.User != "" {
		return s.userDir(s.cfg.User) + "/" + rel
	}
	return s.cfg.Prefix + "/" + rel
}

// validTLSName accepts the names serve uses (a listen host such as "127.0.0.1", "::1" or "mail.example.lan").
func validTLSName(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, "/\\ \t\r\n*") || name == "." || name == ".." {
		return fmt.Errorf("vaultcfg: invalid tls certificate name %q", name)
	}
	return nil
}

// ReadTLSCert returns the client-facing TLS certificate chain and private key (PEM) stored under name at
// <prefix>/.tls/<name> in the KV mount (<prefix>/<user>/.tls/<name> with Config.User), or empty slices (and no
// error) when none is stored yet. It fails with the usual error classes (ErrUnreachable, ErrPermissionDenied, ...).
func (s *Store) ReadTLSCert(ctx context.Context, name string) (certPEM, keyPEM []byte, err error) {
	if err := validTLSName(name); err != nil {
		return nil, nil, err
	}
	sec, err := s.c.read(ctx, s.apiPath("data", s.statePath(tlsDir+"/"+name)))
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
	p := s.apiPath("data", s.statePath(tlsDir+"/"+name))
	_, err := s.c.write(ctx, "write", p, map[string]any{"data": map[string]any{
		"certificate": string(certPEM), "private_key": string(keyPEM)}})
	return err
}

// markerPath is where MarkerKey keeps the proxy's APPEND-marker key, beside the TLS certificates (a name no
// user can have, see ValidateUser).
const markerPath = ".proxy/marker-key"

// MarkerKey returns the 32-byte HMAC key that marks messages the proxy served decrypted (package decrypt),
// stored at <prefix>/.proxy/marker-key in the KV mount (<prefix>/<user>/.proxy/marker-key with Config.User: a
// one-user proxy has a key of its own) and created on first use (check-and-set, so two proxies
// starting at once agree on one key). A stable key lets a proxy recognise its served copies after a restart,
// so an APPEND of one becomes a copy of the original ciphertext instead of a re-encryption. The key is a
// secret: whoever holds it can forge the marker (never more than making the proxy copy a message of the
// same user's mailbox).
func (s *Store) MarkerKey(ctx context.Context) ([]byte, error) {
	return s.stateKey(ctx, s.apiPath("data", s.statePath(markerPath)), "marker key")
}

// stateKey reads the 32-byte random key kept at the KV data path p, creating it on first use with
// check-and-set (cas=0), so that proxies starting at once agree on one key: the one whose write lost reads the
// winner's. what names the key in errors.
func (s *Store) stateKey(ctx context.Context, p, what string) ([]byte, error) {
	for attempt := 0; attempt < 3; attempt++ {
		sec, err := s.c.read(ctx, p)
		if err != nil {
			return nil, err
		}
		if sec != nil && sec.Data != nil {
			data, _ := sec.Data["data"].(map[string]any)
			v, _ := data["key"].(string)
			key, err := base64.StdEncoding.DecodeString(v)
			if err != nil || len(key) < 32 {
				return nil, fmt.Errorf("vaultcfg: %s: unusable %s (delete it to have a new one made)", p, what)
			}
			return key, nil
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("vaultcfg: %s: %w", what, err)
		}
		_, err = s.c.write(ctx, "write", p, map[string]any{
			"data":    map[string]any{"key": base64.StdEncoding.EncodeToString(key)},
			"options": map[string]any{"cas": 0},
		})
		if err == nil {
			return key, nil
		}
		if !strings.Contains(err.Error(), "check-and-set") {
			return nil, err
		}
		// Another proxy wrote one first: read it.
	}
	return nil, fmt.Errorf("vaultcfg: %s: could not create the %s", p, what)
}
