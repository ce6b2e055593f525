package vaultcfg

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
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
	if err := ValidateUser(user); err != nil {
		return nil, err
	}
	var rel string
	switch {
	case s.cfg.User == "":
		rel = s.cfg.Prefix + "/" + metastoreKeysDir + user
	case s.cfg.User == user:
		rel = s.statePath(metastoreKeyPath)
	default:
		return nil, fmt.Errorf("vaultcfg: this proxy serves %q only, not %q", s.cfg.User, user)
	}
	p := s.apiPath("data", rel)
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
				return nil, fmt.Errorf("vaultcfg: %s: unusable metadata-store key (delete it to have a new one made)", p)
			}
			return key, nil
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("vaultcfg: metadata-store key: %w", err)
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
	return nil, fmt.Errorf("vaultcfg: %s: could not create the metadata-store key", p)
}
