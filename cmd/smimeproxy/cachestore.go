package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/smimeproxy/smimeproxy/metastore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// defaultMetadataStore is serve's --metadata-store: $XDG_CACHE_HOME/smimeproxy/metadata (os.UserCacheDir), or
// none when there is no cache directory.
func defaultMetadataStore() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "smimeproxy", "metadata")
}

// openMetadataStore opens serve's metadata store (nil with --metadata-store ""). Each user's key is read from
// Vault, or created there, on the user's first fetch (vaultcfg.Store.MetastoreKey, under the key-store user
// --key-user-template names); the files are per login and per upstream.
func (sf *serveFlags) openMetadataStore(store *vaultcfg.Store, keyUser func(string) string, logger *slog.Logger) (*metastore.Store, error) {
	if sf.metadataStore == "" {
		return nil, nil
	}
	ms, err := metastore.Open(metastore.Options{Dir: sf.metadataStore, Namespace: sf.upstream,
		MaxBytes: int64(sf.metadataBytes), Logger: logger,
		Key: func(ctx context.Context, login string) ([]byte, error) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			user := login
			if keyUser != nil { // nil: --key-user-template {user}
				user = keyUser(login)
			}
			return store.MetastoreKey(ctx, user)
		}})
	if err != nil {
		return nil, fmt.Errorf("--metadata-store: %w", err)
	}
	return ms, nil
}
