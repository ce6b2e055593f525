package vaultcfg

import (
	"fmt"
	"strings"
)

// ProxyPolicy returns a Vault policy (HCL) with what the proxy needs at run time for every user's keys under
// cfg's mounts and prefix: list and read the KV secrets, decrypt with the Transit keys. The only writes it
// allows are the proxy's own state beside the keys: its client TLS certificates (<prefix>/.tls/) and its
// APPEND-marker key (<prefix>/.proxy/), which no user name can reach.
// Token lookup (auth/token/lookup-self) and renewal are in Vault's default policy.
func ProxyPolicy(cfg Config) string {
	cfg.setDefaults()
	kv, prefix, transit := strings.Trim(cfg.KVMount, "/"), strings.Trim(cfg.Prefix, "/"), strings.Trim(cfg.TransitMount, "/")
	return fmt.Sprintf(`# smimeproxy: read users' S/MIME keys and decrypt with Transit keys
path "%[1]s/metadata/%[2]s/*" {
  capabilities = ["list"]
}
path "%[1]s/data/%[2]s/*" {
  capabilities = ["read"]
}
path "%[3]s/decrypt/%[4]s-*" {
  capabilities = ["update"]
}
path "%[1]s/data/%[2]s/.tls/*" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/data/%[2]s/.proxy/*" {
  capabilities = ["create", "read", "update"]
}
`, kv, prefix, transit, transitPrefix(prefix))
}

// AdminPolicy returns a Vault policy (HCL) for `smimeproxy keys import|list|remove`: ProxyPolicy plus writing
// and deleting KV secrets and importing, inspecting and deleting Transit keys.
func AdminPolicy(cfg Config) string {
	cfg.setDefaults()
	kv, prefix, transit := strings.Trim(cfg.KVMount, "/"), strings.Trim(cfg.Prefix, "/"), strings.Trim(cfg.TransitMount, "/")
	return fmt.Sprintf(`# smimeproxy keys: manage users' S/MIME keys
path "%[1]s/metadata/%[2]s/*" {
  capabilities = ["list", "read", "delete"]
}
path "%[1]s/data/%[2]s/*" {
  capabilities = ["create", "read", "update"]
}
path "%[3]s/wrapping_key" {
  capabilities = ["read"]
}
path "%[3]s/keys/%[4]s-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "%[3]s/decrypt/%[4]s-*" {
  capabilities = ["update"]
}
`, kv, prefix, transit, transitPrefix(prefix))
}
