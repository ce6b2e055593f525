package vaultcfg

//lint:file-ignore SA1019 S/MIME key transport is RSA PKCS #1 v1.5 for most senders (RFC 8551 section 2.3); decryption is constant-time with implicit rejection (crypto/cms keytrans.go)

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Transit padding schemes (the padding_scheme parameter of transit/decrypt, Vault 1.19 or later).
const (
	PaddingPKCS1v15 = "pkcs1v15" // RSAES-PKCS1-v1_5 (RFC 8017 section 7.2)
	PaddingOAEP     = "oaep"     // RSAES-OAEP with SHA-256, MGF1-SHA-256 and an empty label (RFC 8017 section 7.1)
)

// ErrTransitOAEPParams is returned for OAEP parameters Transit cannot do (anything but SHA-256 for hash and
// MGF1 and an empty label), notably OAEP-SHA-1 mail. Such keys must be kept in KV.
var ErrTransitOAEPParams = errors.New("vaultcfg: transit decrypts RSA-OAEP only with SHA-256, MGF1-SHA-256 and no label; keep this key in KV to read OAEP-SHA-1 mail")

// errTransitDecrypt is the deliberately vague error of a ciphertext Transit rejected. It wraps rsa.ErrDecryption,
// so package cms reports it as a failed decryption (smime reason "corrupt"), like a bad ciphertext for a local
// key, and not as an unavailable key (cms.ErrKeyOperation, reason "key-unavailable").
var errTransitDecrypt = fmt.Errorf("%w: transit decryption failed: %w", ErrVault, rsa.ErrDecryption)

// TransitKey is an RSA private key held in Vault Transit, used through crypto.Decrypter. Its Decrypt calls
// transit/decrypt/<name>; the private key never leaves Vault.
type TransitKey struct {
	c       *client
	mount   string
	name    string
	pub     *rsa.PublicKey
	timeout time.Duration
	ctx     context.Context // WithContext; nil: context.Background
}

// Public implements crypto.Decrypter.
func (k *TransitKey) Public() crypto.PublicKey { return k.pub }

// Name returns the Transit key's name (not secret), for logs.
func (k *TransitKey) Name() string { return k.name }

// Decrypt implements crypto.Decrypter under k's context (WithContext) and the request timeout of the Store;
// see DecryptContext.
func (k *TransitKey) Decrypt(random io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	ctx, cancel := k.callContext()
	defer cancel()
	return k.DecryptContext(ctx, random, ciphertext, opts)
}

// DecryptContext decrypts an RSA key-transport ciphertext in Transit. opts is as for rsa.PrivateKey.Decrypt:
// nil or *rsa.PKCS1v15DecryptOptions selects PKCS #1 v1.5 (RFC 8017 section 7.2.2), *rsa.OAEPOptions selects
// OAEP (RFC 8017 section 7.1.2) and must be SHA-256/MGF1-SHA-256/no label (else ErrTransitOAEPParams).
//
// With PKCS1v15DecryptOptions.SessionKeyLen > 0, a ciphertext Transit rejects, or a plaintext of another
// length, yields SessionKeyLen random bytes from random and no error, as rsa.DecryptPKCS1v15SessionKey does, so
// no padding oracle reaches the caller (RFC 3218 section 2.3.2). Otherwise a rejected ciphertext, and a Transit
// key Vault cannot use for it (missing, or its material does not decrypt), is an error wrapping
// rsa.ErrDecryption. Failures that say nothing about the ciphertext or the key (Vault unreachable, sealed,
// permission denied, rate limited, a proxy in front of Vault failing) are returned as they are.
func (k *TransitKey) DecryptContext(ctx context.Context, random io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	padding, sessionKeyLen, err := paddingOf(opts)
	if err != nil {
		return nil, err
	}
	if random == nil {
		random = rand.Reader
	}
	var pt []byte
	var perr error
	res, err := k.decryptBatch(ctx, [][]byte{ciphertext}, padding)
	switch {
	case err == nil:
		pt, perr = res[0].Plaintext, res[0].Err
	case rejectedByTransit(err):
		// Vault answered that it cannot decrypt this input with this key: treat it like a rejected item.
		perr = errTransitDecrypt
	default:
		return nil, err // unreachable, sealed, permission denied, missing mount: independent of the ciphertext
	}
	if sessionKeyLen > 0 {
		if perr != nil || len(pt) != sessionKeyLen {
			key := make([]byte, sessionKeyLen)
			if _, err := io.ReadFull(random, key); err != nil {
				return nil, err
			}
			return key, nil
		}
		return pt, nil
	}
	if perr != nil {
		return nil, perr
	}
	return pt, nil
}

// paddingOf maps crypto.DecrypterOpts to a Transit padding scheme.
func paddingOf(opts crypto.DecrypterOpts) (padding string, sessionKeyLen int, err error) {
	switch o := opts.(type) {
	case nil:
		return PaddingPKCS1v15, 0, nil
	case *rsa.PKCS1v15DecryptOptions:
		return PaddingPKCS1v15, o.SessionKeyLen, nil
	case *rsa.OAEPOptions:
		mgf := o.MGFHash
		if mgf == 0 {
			mgf = o.Hash
		}
		if o.Hash != crypto.SHA256 || mgf != crypto.SHA256 || len(o.Label) != 0 {
			return "", 0, ErrTransitOAEPParams
		}
		return PaddingOAEP, 0, nil
	default:
		return "", 0, fmt.Errorf("vaultcfg: transit cannot decrypt with options %T", opts)
	}
}

// BatchResult is one item of DecryptBatch: the plaintext, or Err (vague, like rsa.ErrDecryption) when Transit
// rejected that ciphertext.
type BatchResult struct {
	Plaintext []byte
	Err       error
}

// DecryptBatch decrypts many ciphertexts with one transit/decrypt call (batch_input). The proxy does not batch
// (each message's key transport is one Decrypt call, under that request's context); DecryptBatch is for bulk
// tools and measurements. padding is PaddingPKCS1v15 or PaddingOAEP. The
// error is for the call as a whole (Vault unreachable, permission denied); per-item failures are in the
// results, which are in the order of ciphertexts. Callers decrypting PKCS #1 v1.5 session keys must treat an
// item error like a wrong-length plaintext (substitute a random key), as DecryptContext does.
func (k *TransitKey) DecryptBatch(ctx context.Context, ciphertexts [][]byte, padding string) ([]BatchResult, error) {
	if padding != PaddingPKCS1v15 && padding != PaddingOAEP {
		return nil, fmt.Errorf("vaultcfg: unknown transit padding scheme %q", padding)
	}
	return k.decryptBatch(ctx, ciphertexts, padding)
}

// maxBatch bounds one batch_input request.
const maxBatch = 256

func (k *TransitKey) decryptBatch(ctx context.Context, cts [][]byte, padding string) ([]BatchResult, error) {
	out := make([]BatchResult, 0, len(cts))
	for start := 0; start < len(cts); start += maxBatch {
		part := cts[start:min(start+maxBatch, len(cts))]
		items := make([]map[string]any, len(part))
		for i, ct := range part {
			// Ciphertext made outside Vault is given as version 1 of the imported key.
			items[i] = map[string]any{"ciphertext": "vault:v1:" + base64.StdEncoding.EncodeToString(ct), "padding_scheme": padding}
		}
		p := k.mount + "/decrypt/" + k.name
		sec, err := k.c.writeKeepBody(ctx, "decrypt with", p, map[string]any{"batch_input": items, "padding_scheme": padding})
		var results []any
		if sec != nil && sec.Data != nil {
			results, _ = sec.Data["batch_results"].([]any)
		}
		// When any item fails Vault answers HTTP 400 or 500 for the whole call but still lists per-item results;
		// only an answer without them is a failure of the call.
		if err != nil && len(results) != len(part) {
			k.c.count(err) // a failed call, not per-item results
			return nil, err
		}
		if len(results) != len(part) {
			err := fmt.Errorf("%w: decrypt with %s: %d results for %d ciphertexts", ErrVault, p, len(results), len(part))
			k.c.count(err)
			return nil, err
		}
		for _, r := range results {
			m, _ := r.(map[string]any)
			if e, _ := m["error"].(string); e != "" {
				out = append(out, BatchResult{Err: errTransitDecrypt})
				continue
			}
			b64, _ := m["plaintext"].(string)
			pt, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				out = append(out, BatchResult{Err: errTransitDecrypt})
				continue
			}
			out = append(out, BatchResult{Plaintext: pt})
		}
	}
	return out, nil
}

// rejectedByTransit reports whether a failed transit/decrypt call was Vault refusing the input or the key rather
// than being unavailable: HTTP 400 ("encryption key not found", an unusable ciphertext), or an answer that does
// not fit the request. Per-item failures (a ciphertext the key does not decrypt) come as batch results instead.
func rejectedByTransit(err error) bool {
	var ve *vaultError
	if errors.As(err, &ve) {
		return ve.class == ErrVault && ve.status == 400
	}
	return errors.Is(err, ErrVault) // decryptBatch's own "n results for m ciphertexts"
}

// isBadRequest reports whether err is Vault's answer that it could not process this input (HTTP 400), as
// opposed to an availability or permission failure.
func isBadRequest(err error) bool {
	var ve *vaultError
	return errors.As(err, &ve) && ve.class == ErrVault && ve.status == 400
}

// transitKeyName names user's key id in Transit. Transit key names allow only letters, digits, "_", "-" and
// ".", so the user part is a hash: <prefix>-<first 16 hex digits of SHA-256(user)>-<id>.
func transitKeyName(prefix, user, id string) string {
	return transitPrefix(prefix) + "-" + transitUserID(user) + "-" + id
}

// transitUserID is the user part of user's Transit key names: the first 16 hex digits of SHA-256(user).
func transitUserID(user string) string {
	sum := sha256.Sum256([]byte(user))
	return hex.EncodeToString(sum[:8])
}

// transitPrefix is prefix with characters Transit key names do not allow replaced by "-".
func transitPrefix(prefix string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, prefix)
}

// ensureTransitKey makes sure Transit key name holds key: if it exists its public key must match, otherwise
// key is imported.
func (s *Store) ensureTransitKey(ctx context.Context, name string, key *rsa.PrivateKey) error {
	p := s.cfg.TransitMount + "/keys/" + name
	sec, err := s.c.read(ctx, p)
	if err != nil {
		return err
	}
	if sec == nil {
		return s.importTransit(ctx, name, key)
	}
	keys, _ := sec.Data["keys"].(map[string]any)
	v1, _ := keys["1"].(map[string]any)
	pubPEM, _ := v1["public_key"].(string)
	blk, _ := pem.Decode([]byte(pubPEM))
	if blk == nil {
		return fmt.Errorf("%w: %s exists but has no RSA public key", ErrVault, p)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil || !key.PublicKey.Equal(pub) {
		return fmt.Errorf("vaultcfg: %s exists and holds a different key", p)
	}
	return nil
}

// importTransit imports key as Transit key name (bring your own key): PKCS#8 DER wrapped with AES-KWP
// (RFC 5649) under a fresh AES-256 key, which is wrapped with RSA-OAEP-SHA-256 under Transit's wrapping key;
// the two are concatenated, base64-encoded, and posted to transit/keys/<name>/import.
func (s *Store) importTransit(ctx context.Context, name string, key *rsa.PrivateKey) error {
	wp := s.cfg.TransitMount + "/wrapping_key"
	sec, err := s.c.read(ctx, wp)
	if err != nil {
		return err
	}
	var pubPEM string
	if sec != nil {
		pubPEM, _ = sec.Data["public_key"].(string)
	}
	blk, _ := pem.Decode([]byte(pubPEM))
	if blk == nil {
		return fmt.Errorf("%w: read %s: no public key in the answer", ErrVault, wp)
	}
	wpub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	wrsa, ok := wpub.(*rsa.PublicKey)
	if err != nil || !ok {
		return fmt.Errorf("%w: read %s: wrapping key is not RSA", ErrVault, wp)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("vaultcfg: encoding the key for transit: %w", err)
	}
	defer clear(der)
	eph := make([]byte, 32)
	if _, err := rand.Read(eph); err != nil {
		return err
	}
	defer clear(eph)
	if _, err := aes.NewCipher(eph); err != nil {
		return err
	}
	wrappedKey, err := wrapKWP(eph, der)
	if err != nil {
		return err
	}
	wrappedEph, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, wrsa, eph, nil)
	if err != nil {
		return fmt.Errorf("vaultcfg: wrapping the import key: %w", err)
	}
	typ := fmt.Sprintf("rsa-%d", key.N.BitLen())
	ip := s.cfg.TransitMount + "/keys/" + name + "/import"
	body := map[string]any{
		"ciphertext":    base64.StdEncoding.EncodeToString(append(wrappedEph, wrappedKey...)),
		"type":          typ,
		"hash_function": "SHA256",
		"exportable":    false,
	}
	_, err = s.c.write(ctx, "import key at", ip, body)
	return err
}

// deleteTransitKey allows deletion of a Transit key and deletes it; a key that is already gone is fine.
func (s *Store) deleteTransitKey(ctx context.Context, mount, name string) error {
	if name == "" {
		return nil
	}
	if mount == "" {
		mount = s.cfg.TransitMount
	}
	cp := mount + "/keys/" + name + "/config"
	if _, err := s.c.write(ctx, "configure", cp, map[string]any{"deletion_allowed": true}); err != nil {
		if isBadRequest(err) || isNotFound(err) {
			return nil // no such key
		}
		return err
	}
	kp := mount + "/keys/" + name
	return s.c.del(ctx, kp)
}

func isNotFound(err error) bool {
	var ve *vaultError
	return errors.As(err, &ve) && ve.class == ErrVault && ve.status == 404
}

// WithContext returns a copy of k bound to ctx: its Decrypt and Sign (the fixed signatures of
// crypto.Decrypter and crypto.Signer, which take no context) run their Vault call under ctx, within the Store's
// request timeout, so that a caller that goes away (a mail client that disconnects) cancels it. It is the same
// idea as tls.ClientHelloInfo.Context: the callback's signature is fixed, the value carries the cancellation.
// Store.Lookup returns Transit keys bound to its context.
func (k *TransitKey) WithContext(ctx context.Context) *TransitKey {
	b := *k
	b.ctx = ctx
	return &b
}

// callContext is the context of one Vault call of Decrypt or Sign: the bound context (WithContext), or the
// background, within the request timeout.
func (k *TransitKey) callContext() (context.Context, context.CancelFunc) {
	ctx := k.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, k.timeout)
}
