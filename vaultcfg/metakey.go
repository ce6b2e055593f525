package vaultcfg

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// metastoreKeyPath is where a one-user proxy (Config.User) keeps the key of its metadata store, inside the
// user's subtree beside the marker key (UserPolicy and TemplatedPolicy allow <prefix>/<user>/.proxy/*).
const metastoreKeyPath = ".proxy/metastore-key"

// metastoreKeysDir holds the metadata-store keys of a proxy for all users, one secret per user, in the shared
// proxy state (ProxyPolicy allows <prefix>/.proxy/*; no user name starts with a dot, see ValidateUser).
const metastoreKeysDir = ".proxy/metastore-keys/"

// MetastoreKey returns user's 32-byte key of the proxy's metadata store (package metastore: the small data
// derived from decrypted mail, sealed on the local disk under this key), created on first use with
// check-and-set so that two proxies starting at once agree on one key. It lives at
// <prefix>/<user>/.proxy/metastore-key with Config.User (which must then be user), else at
// <prefix>/.proxy/metastore-keys/<user>. The key never touches the disk; deleting it in Vault makes the
// user's store unreadable, and the proxy starts it afresh (a key rotation).
func (s *Store) MetastoreKey(ctx context.Context, user string) ([]byte, error) {
	p, err := s.metastoreKeyPath(user)
	if err != nil {
		return nil, err
	}
	return s.stateKey(ctx, p, "metadata-store key")
}

// metastoreKeyPath is the KV v2 data path of user's metadata-store key.
func (s *Store) metastoreKeyPath(user string) (string, error) {
	if err := ValidateUser(user); err != nil {
		return "", err
	}
	var rel string
	switch {
	case s.cfg.User == "":
		rel = s.cfg.Prefix + "/" + metastoreKeysDir + user
	case s.cfg.User == user:
		rel = s.statePath(metastoreKeyPath)
	default:
		return "", fmt.Errorf("vaultcfg: this proxy serves %q only, not %q", s.cfg.User, user)
	}
	return s.apiPath("data", rel), nil
}

// RotateMetastoreKey replaces user's metadata-store key with a new random one (`smimeproxy cache rotate-key`).
// The write is a check-and-set on the version read, so a proxy creating the key at the same moment cannot be
// overwritten unseen. The old key stays in the KV version history until an administrator destroys it
// (`vault kv destroy`); a store file sealed under it no longer opens and is started afresh, so the caller
// removes it (metastore.Rotate). A user without a key gets a first one.
func (s *Store) RotateMetastoreKey(ctx context.Context, user string) error {
	p, err := s.metastoreKeyPath(user)
	if err != nil {
		return err
	}
	sec, err := s.c.read(ctx, p)
	if err != nil {
		return err
	}
	version := int64(0)
	if sec != nil && sec.Data != nil {
		meta, _ := sec.Data["metadata"].(map[string]any)
		n, ok := meta["version"].(json.Number)
		if !ok {
			return fmt.Errorf("vaultcfg: %s: no version in the KV v2 answer", p)
		}
		if version, err = n.Int64(); err != nil {
			return fmt.Errorf("vaultcfg: %s: version: %w", p, err)
		}
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("vaultcfg: metadata-store key: %w", err)
	}
	defer clear(key)
	_, err = s.c.write(ctx, "write", p, map[string]any{
		"data":    map[string]any{"key": base64.StdEncoding.EncodeToString(key)},
		"options": map[string]any{"cas": version},
	})
	if err != nil {
		return fmt.Errorf("vaultcfg: rotating the metadata-store key: %w", err)
	}
	return nil
}
