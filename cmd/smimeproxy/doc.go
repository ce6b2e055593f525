// Command smimeproxy is an IMAP proxy with transparent S/MIME decryption.
//
// Subcommands (one file each): serve (the proxy), decrypt (offline decryption of one message), keys (key
// management in Vault), demo (a self-contained demo), doctor (checks a setup), config (prints an example
// config file). Only this package reads flags and the environment or calls os.Exit.
package main
