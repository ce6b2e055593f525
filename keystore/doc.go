// Package keystore defines where S/MIME private keys come from: the Store interface that the proxy and the
// decrypt command consume, the key ID and metadata derived from a certificate, and an in-memory Store for the
// demo and tests. The Vault-backed Store lives in package vaultcfg.
package keystore
