// Package vaultcfg is the proxy's whole Vault side, not only its configuration (the name is historical): it
// connects to Vault the way Vault's own tools do (VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, VAULT_NAMESPACE,
// ~/.vault-token, AppRole with renewal and re-login; renewable user tokens are renewed too) and on top of that
// holds the key store (Store, a keystore.Store), the users' address books (contacts.go, a
// keystore.AddressBook), the proxy's own state (TLS certificates, the APPEND-marker and metadata-store keys)
// and the Vault policies for all of it.
//
// Layout: one KV v2 secret per key at <kv-mount>/data/<prefix>/<user>/<key-id> holding the certificate chain
// (PEM), the private key (PKCS#8 PEM) unless the key lives in Transit, and metadata (fingerprint, subject,
// emails, validity, recipient identifiers, storage kind). RSA keys may instead be imported into the Transit
// secrets engine (bring-your-own-key, RFC 5649 key wrap); Transit then decrypts key-transport ciphertext with
// padding_scheme pkcs1v15 or oaep (Vault 1.19 or later), exposed as a crypto.Decrypter.
//
// Transit keys are named <prefix>-<first 16 hex digits of SHA-256(user)>-<key-id> (Transit names allow only
// letters, digits, "_", "-" and "."); the KV secret records the name. ProxyPolicy (a proxy for all users),
// UserPolicy and TemplatedPolicy (one user's own proxy) and AdminPolicy (key management) return the Vault
// policies for a Config. The proxy's own state lives beside the keys under names no user can have: client TLS
// certificates at <prefix>/.tls/<name> (ReadTLSCert, WriteTLSCert) and the APPEND-marker key at
// <prefix>/.proxy/marker-key (MarkerKey); a one-user Store (Config.User) keeps them in its user's subtree
// instead, at <prefix>/<user>/.tls/<name> and <prefix>/<user>/.proxy/marker-key.
//
// Unsupported: EC keys and RSA-OAEP with SHA-1 (or any parameters other than SHA-256/MGF1-SHA-256/no label) in
// Transit, because Transit has no ECDH and fixes OAEP to SHA-256; such keys must stay in KV.
//
// Implementation notes: every Vault call takes the caller's context, bounded by Config.Timeout; Transit keys
// from Lookup are bound to the lookup's context (TransitKey.WithContext), since crypto.Decrypter takes none.
// The one exception is the load of a user's keys that concurrent lookups share (singleflight): it runs under
// context.WithoutCancel, so one caller that goes away does not fail the others. Failed requests are counted
// (Config.Metrics, the vault_errors_total metric). Errors are single-line, name the Vault path and the failure
// class (ErrUnreachable, ErrSealed, ErrPermissionDenied, ErrMountNotFound) and never carry a token, secret id or
// key material. Parsed keys are cached in memory (bounded TTL and size) so a busy session does not ask Vault
// per message and cached keys keep working while Vault is unreachable.
package vaultcfg
