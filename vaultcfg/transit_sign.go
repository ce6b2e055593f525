package vaultcfg

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
)

// Signing with a Transit key, for the submission front end (package submit): the signature is made inside
// Vault by transit/sign; the private key never leaves it.

var _ crypto.Signer = (*TransitKey)(nil)

// transitHashNames maps a digest to the hash_algorithm path segment of transit/sign.
var transitHashNames = map[crypto.Hash]string{
	crypto.SHA256: "sha2-256",
	crypto.SHA384: "sha2-384",
	crypto.SHA512: "sha2-512",
}

// Sign implements crypto.Signer under k's context (WithContext) and the request timeout of the Store; see
// SignContext.
func (k *TransitKey) Sign(random io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx, cancel := k.callContext()
	defer cancel()
	return k.SignContext(ctx, digest, opts)
}

// SignContext signs digest (already hashed with opts.HashFunc(): SHA-256, SHA-384 or SHA-512) with RSASSA-PKCS1-v1_5
// (RFC 8017 section 8.2) by transit/sign/<name>/<hash> with prehashed=true and signature_algorithm=pkcs1v15.
// PSS options are refused (S/MIME signatures here are PKCS #1 v1.5). The Vault policy must allow update on
// transit/sign/<name>/* (UserPolicy and ProxyPolicy do). Errors are classified like every Vault call
// (ErrUnreachable, ErrPermissionDenied, ...).
func (k *TransitKey) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if _, pss := opts.(*rsa.PSSOptions); pss {
		return nil, fmt.Errorf("vaultcfg: transit sign: only PKCS #1 v1.5 is supported")
	}
	name, ok := transitHashNames[opts.HashFunc()]
	if !ok {
		return nil, fmt.Errorf("vaultcfg: transit sign: unsupported hash %v", opts.HashFunc())
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("vaultcfg: transit sign: digest of %d bytes for %v", len(digest), opts.HashFunc())
	}
	p := k.mount + "/sign/" + k.name + "/" + name
	sec, err := k.c.write(ctx, "sign with", p, map[string]any{
		"input":               base64.StdEncoding.EncodeToString(digest),
		"prehashed":           true,
		"signature_algorithm": "pkcs1v15",
	})
	if err != nil {
		return nil, err
	}
	var s string
	if sec != nil && sec.Data != nil {
		s, _ = sec.Data["signature"].(string)
	}
	// "vault:v<version>:<base64>"
	i := strings.LastIndexByte(s, ':')
	if !strings.HasPrefix(s, "vault:v") || i < 0 {
		return nil, fmt.Errorf("%w: sign with %s: no signature in the answer", ErrVault, p)
	}
	sig, err := base64.StdEncoding.DecodeString(s[i+1:])
	if err != nil {
		return nil, fmt.Errorf("%w: sign with %s: bad signature encoding", ErrVault, p)
	}
	return sig, nil
}
