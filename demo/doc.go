// Package demo runs smimeproxy end to end in one process, with no mail server or Vault to set up: an in-memory
// upstream IMAP server (go-imap's imapmemserver) on loopback holding S/MIME-encrypted sample messages (RFC 8551)
// made at start for a freshly generated demo key pair, the key in a key store (in memory, or any
// keystore.Store such as Vault), and the proxy in front of it on 127.0.0.1. The `smimeproxy demo` command and
// the tests share it.
//
// The sending half (send.go): the submission front end (package submit) on 127.0.0.1 (DefaultSubmissionListen),
// in front of an in-process SMTP server (go-smtp) that delivers into the same in-memory mailbox. Mail the demo
// user sends to demo@example.com is signed with the demo key and encrypted to the demo certificate (the one
// entry of the demo's address book, trusted), stored upstream as ciphertext, and read back through the proxy
// decrypted with X-Smimeproxy-Signature: valid.
//
// The demo key exists only for the life of the process (unless put into a persistent store); the samples are
// encrypted with RSA PKCS#1 v1.5 key transport and AES-256-CBC, the way most real S/MIME mail is.
package demo
