package vaultcfg

import (
	"fmt"
	"strings"
)

// Which token each workstation gets:
//
//   - a proxy that serves every user (a shared host): ProxyPolicy, all users' keys;
//   - a proxy that serves one user (the usual workstation, Config.User set): UserPolicy for that user, or
//     TemplatedPolicy, one policy for all such users that Vault narrows to each token's own user;
//   - `smimeproxy keys import|list|remove`, run by whoever manages keys: AdminPolicy. No proxy needs it.
//
// Vault enforces the isolation: a UserPolicy or TemplatedPolicy token cannot list users, read another user's
// KV secrets, decrypt with another user's Transit keys, or read or write another user's proxy state.

// Entity metadata keys read by TemplatedPolicy (see EntityMetadata).
const (
	// MetadataUser holds the user name as the key store knows it (the --user of keys import).
	MetadataUser = "smimeproxy_user"
	// MetadataTransit holds the user part of the user's Transit key names (16 hex digits of SHA-256(user)),
	// which Vault's templating cannot compute.
	MetadataTransit = "smimeproxy_transit"
)

// policyPaths returns cfg's KV mount, prefix, Transit mount and Transit name prefix as they appear in policies.
func policyPaths(cfg Config) (kv, prefix, transit, tprefix string) {
	cfg.setDefaults()
	kv, prefix, transit = strings.Trim(cfg.KVMount, "/"), strings.Trim(cfg.Prefix, "/"), strings.Trim(cfg.TransitMount, "/")
	return kv, prefix, transit, transitPrefix(prefix)
}

// ProxyPolicy returns a Vault policy (HCL) with what a proxy serving every user needs at run time for every
// user's keys under cfg's mounts and prefix: list and read the KV secrets, decrypt and sign with the Transit keys. The
// only writes it allows are the proxy's shared state beside the keys (its client TLS certificates at
// <prefix>/.tls/ and its APPEND-marker key at <prefix>/.proxy/, which no user name can reach) and entries of the
// users' address books (<prefix>/<user>/contacts/, certificates harvested from signed mail). A token with it
// reads every user's private keys: give it only to a proxy that serves all users, on a host they all trust; a
// workstation's own proxy gets UserPolicy or TemplatedPolicy.
// Token lookup (auth/token/lookup-self) and renewal are in Vault's default policy.
func ProxyPolicy(cfg Config) string {
	kv, prefix, transit, tprefix := policyPaths(cfg)
	// Vault picks the most specific matching path (not the union of all), and a "+" segment ranks below a
	// literal one and "/*" after a shorter path ranks below a longer one: the users' paths are written with "+"
	// so that the address-book paths (longer) win over them, and .tls/ and .proxy/ (literal) win over both.
	return fmt.Sprintf(`# smimeproxy: a proxy for ALL users: read every user's S/MIME keys and decrypt with their Transit keys
path "%[1]s/metadata/%[2]s/" {
  capabilities = ["list"]
}
path "%[1]s/metadata/%[2]s/+/*" {
  capabilities = ["list"]
}
path "%[1]s/data/%[2]s/+/*" {
  capabilities = ["read"]
}
path "%[3]s/decrypt/%[4]s-*" {
  capabilities = ["update"]
}
path "%[3]s/sign/%[4]s-*" {
  capabilities = ["update"]
}
path "%[1]s/data/%[2]s/.tls/*" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/data/%[2]s/.proxy/*" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/data/%[2]s/+/%[5]s/*" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/metadata/%[2]s/+/%[5]s/*" {
  capabilities = ["list", "delete"]
}
`, kv, prefix, transit, tprefix, contactsFolder)
}

// UserPolicy returns a Vault policy (HCL) for a proxy that serves only user (Config.User = user): list and read
// user's KV secrets (<prefix>/<user>/), decrypt and sign (submission) with user's Transit keys (<prefix>-<16 hex of SHA-256(user)>-*),
// create, read and update user's proxy state (<prefix>/<user>/.tls/, <prefix>/<user>/.proxy/), and create,
// update and delete entries of user's address book (<prefix>/<user>/contacts/). Nothing else: not the list of users, not another user's keys or state, not
// user's own key secrets (only keys import with AdminPolicy writes those). user must pass ValidateUser, which
// keeps it inside its own subtree (no "/", "..", ".tls", or the policy wildcard "+").
func UserPolicy(cfg Config, user string) (string, error) {
	if err := ValidateUser(user); err != nil {
		return "", err
	}
	return userPolicy(cfg, "the proxy of "+user, user, transitUserID(user)), nil
}

// TemplatedPolicy returns one Vault policy (HCL) for every user's own proxy, with the paths of UserPolicy
// filled in by Vault's identity templating from the metadata of the token's entity: MetadataUser names the user
// and MetadataTransit holds the user part of the Transit key names (a hash templating cannot compute). Attach
// it to the auth method's users or roles (userpass, LDAP, OIDC, AppRole, ...) and set each entity's metadata as
// EntityMetadata returns. A token whose entity lacks the metadata gets none of these paths (Vault skips a
// template it cannot fill). Only an admin may write entity metadata (identity/entity): whoever can set
// MetadataUser can read that user's keys.
func TemplatedPolicy(cfg Config) string {
	return userPolicy(cfg, "each user's own proxy, the user named by the token's entity metadata "+MetadataUser+" and "+MetadataTransit,
		"{{identity.entity.metadata."+MetadataUser+"}}", "{{identity.entity.metadata."+MetadataTransit+"}}")
}

// EntityMetadata returns the Vault entity metadata TemplatedPolicy needs for user: MetadataUser and
// MetadataTransit.
func EntityMetadata(user string) (map[string]string, error) {
	if err := ValidateUser(user); err != nil {
		return nil, err
	}
	return map[string]string{MetadataUser: user, MetadataTransit: transitUserID(user)}, nil
}

func userPolicy(cfg Config, who, user, tid string) string {
	kv, prefix, transit, tprefix := policyPaths(cfg)
	return fmt.Sprintf(`# smimeproxy: %[7]s: only this user's S/MIME keys, Transit keys and proxy state
path "%[1]s/metadata/%[2]s/%[5]s/*" {
  capabilities = ["list"]
}
path "%[1]s/data/%[2]s/%[5]s/*" {
  capabilities = ["read"]
}
path "%[3]s/decrypt/%[4]s-%[6]s-*" {
  capabilities = ["update"]
}
path "%[3]s/sign/%[4]s-%[6]s-*" {
  capabilities = ["update"]
}
path "%[1]s/data/%[2]s/%[5]s/.tls/*" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/data/%[2]s/%[5]s/.proxy/*" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/data/%[2]s/%[5]s/%[8]s/*" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/metadata/%[2]s/%[5]s/%[8]s/*" {
  capabilities = ["list", "delete"]
}
`, kv, prefix, transit, tprefix, user, tid, who, contactsFolder)
}

// AdminPolicy returns a Vault policy (HCL) for `smimeproxy keys import|list|remove`: ProxyPolicy plus writing
// and deleting KV secrets and importing, inspecting and deleting Transit keys. Only key management needs it;
// no proxy does.
func AdminPolicy(cfg Config) string {
	kv, prefix, transit, tprefix := policyPaths(cfg)
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
`, kv, prefix, transit, tprefix)
}
