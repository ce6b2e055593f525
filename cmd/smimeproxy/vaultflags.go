package main

import (
	"context"
	"errors"
	"flag"

	"github.com/smimeproxy/smimeproxy/keystore"
)

// vaultFlags are the Vault options shared by keys, decrypt --user, serve and doctor.
// Placeholder until the Vault key store lands (owned by the vaultcfg work).
type vaultFlags struct{}

// addVaultFlags registers the Vault flags on fs.
func addVaultFlags(fs *flag.FlagSet) *vaultFlags { return &vaultFlags{} }

// open connects to Vault and returns the key store and a function that releases it (stops token renewal).
func (v *vaultFlags) open(ctx context.Context, env *cmdEnv) (keystore.Store, func(), error) {
	return nil, func() {}, errors.New("vault: not available in this build")
}
