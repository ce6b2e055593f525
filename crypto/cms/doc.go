// Package cms decrypts CMS EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083), the
// encryption layer of S/MIME (RFC 8551). It is pure: bytes in, bytes out, no I/O, no logging. It owns the
// BER/DER reading of CMS, recipient selection, key transport and key agreement, key unwrapping and content
// decryption; MIME handling is crypto/smime's, keys come from the caller.
//
// # Supported
//
// Encodings: DER and BER (X.690), including indefinite lengths and constructed (segmented) OCTET STRINGs as
// NSS/Thunderbird and `openssl cms -stream` produce them. BER input is rewritten once to DER; DER input is
// read in place.
//
// Recipients (RFC 5652 section 6.2): KeyTransRecipientInfo and KeyAgreeRecipientInfo, identified by
// IssuerAndSerialNumber or SubjectKeyIdentifier; any number of them, RSA and EC mixed. KEKRecipientInfo,
// PasswordRecipientInfo and OtherRecipientInfo (KEM) are skipped.
//
//   - RSA PKCS #1 v1.5 key transport (RFC 3370 section 4.2.1), without a padding oracle: the key is unwrapped
//     with rsa.PKCS1v15DecryptOptions.SessionKeyLen, so bad padding yields a random key and every later
//     failure is the same ErrDecryption.
//   - RSAES-OAEP (RFC 3560, RFC 4055 section 4.1) with SHA-1/224/256/384/512, an MGF1 hash that may differ from
//     the OAEP hash, and a pSpecified label.
//   - ECDH ephemeral-static on P-256, P-384, P-521 (RFC 5753 section 3.1.1) with dhSinglePass-stdDH (and
//     cofactorDH) sha1/224/256/384/512kdf-scheme: the ANSI X9.63 KDF over ECC-CMS-SharedInfo (RFC 5753
//     section 7.2).
//   - X25519 and X448 (RFC 8418) with the HKDF-SHA256/384/512 schemes or the X9.63 KDF schemes.
//   - Key wrap: AES-128/192/256 (RFC 3394, RFC 3565 section 2.3.2) and Triple-DES (RFC 3217).
//
// Content encryption: AES-128/192/256-CBC (RFC 3565) and 3DES-CBC (RFC 3370 section 5.1) in EnvelopedData;
// AES-GCM (RFC 5084) and ChaCha20-Poly1305 (RFC 8103) in AuthEnvelopedData, whose authAttrs (DER, re-tagged
// as SET OF, RFC 5083 section 2.2) are the additional authenticated data and whose MAC is always checked.
//
// Keys: a crypto.Decrypter with an *rsa.PublicKey (for example a remote key in Vault Transit) for key
// transport; a KeyAgreer for key agreement. *rsa.PrivateKey, *ecdsa.PrivateKey and *ecdh.PrivateKey are
// accepted directly, NewX448KeyAgreer wraps a raw X448 key.
//
// # Unsupported
//
// These fail with ErrUnsupported: static-static key agreement (originator identified by certificate),
// compressed EC points, the RFC 5649 key wrap with padding, RC2/DES/AES-CFB and other legacy content ciphers,
// GCM in EnvelopedData or CBC in AuthEnvelopedData, detached encrypted content, GCM with both a non-12-byte
// nonce and a tag shorter than 16 bytes, and constructed BIT STRINGs. AuthenticatedData (RFC 5652 section 9)
// and every other content type fail Parse with ErrNotEnveloped; a message whose only RecipientInfos for the
// certificate are KEK, password or KEM (RFC 9629) ones fails with ErrNoRecipient. SignedData (RFC 5652
// section 5) is verified by Verify: the signer by issuer+serial or subject key identifier, signed attributes
// (contentType, messageDigest) re-encoded as a SET OF, RSA PKCS #1 v1.5, RSA-PSS, ECDSA P-256/384/521 and
// Ed25519 over SHA-2 (SHA-1 verifies but is reported Weak); certificate chains are the caller's (see
// crypto/smime Verify). SignedContent only unwraps opaque signed-data. CBC content has no integrity protection (a property
// of EnvelopedData, see EFAIL); callers that need integrity must require AuthEnvelopedData (Info.Authenticated).
//
// # Limits against hostile input
//
// Inputs larger than MaxInputSize (1 GiB), elements nested deeper than MaxDepth (32), more than 2^20
// constructed elements, more than 1024 RecipientInfos, more than 1024 recipient keys in total
// (KeyTransRecipientInfos plus the RecipientEncryptedKeys of all KeyAgreeRecipientInfos: the limits are per
// envelope, so many lists cannot multiply them), and encrypted keys, authAttrs, MAC or ukm over 64 KiB fail
// with ErrTooLarge, checked before anything is stored for them; broken structure fails with ErrMalformed.
// Parsing holds at most those 1024 recipients (under 1 MB) beyond the input and, for BER, its DER copy and 4
// bytes per constructed element. No input panics (FuzzParse, FuzzDecrypt).
//
// # Memory
//
// Parse of DER input copies nothing; Decrypt then allocates the plaintext once. Parse of BER input makes one
// DER copy (segments of the encrypted content are joined inside it) and Decrypt decrypts in place in that
// copy, so the caller may drop its input after Parse. ParseOwned lets the Envelope decrypt inside the caller's
// buffer, so DER input then needs no message-sized allocation at all. An Envelope that decrypted in place
// cannot be decrypted again (ErrDecryption).
//
// # Errors
//
// Errors wrap the sentinels ErrNotEnveloped, ErrNotSigned, ErrNoRecipient, ErrDecryption, ErrUnsupported,
// ErrMalformed, ErrTooLarge and ErrKeyOperation (the caller's key failed, its error wrapped too). Every failure that depends on secret data (key unwrap, padding, MAC) is the bare
// ErrDecryption, deliberately vague like crypto/rsa's.
package cms
