package vaultcfg

import (
	"context"
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
	return s.stateKey(ctx, s.apiPath("data", rel), "metadata-store key")
}
