// Package demo runs smimeproxy end to end in one process, with no mail server or Vault to set up: an in-memory
// upstream IMAP server (go-imap's imapmemserver) on loopback holding S/MIME-encrypted sample messages (RFC 8551)
// made at start for a freshly generated demo key pair, the key in a key store (in memory, or any
// keystore.Store such as Vault), and the proxy in front of it on 127.0.0.1. The `smimeproxy demo` command and
// the tests share it.
//
// The demo key exists only for the life of the process (unless put into a persistent store); the samples are
// encrypted with RSA PKCS#1 v1.5 key transport and AES-256-CBC, the way most real S/MIME mail is.
package demo
