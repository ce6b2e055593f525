package smime

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

// Key is a private key with the certificate it belongs to. Private is what cms.Envelope.Decrypt accepts: a
// crypto.Decrypter with an RSA public key (possibly remote), or an EC/X25519/X448 key or cms.KeyAgreer.
type Key struct {
	Cert    *x509.Certificate
	Private crypto.PrivateKey
}

// Keyring supplies keys for recipient identifiers (RFC 5652 section 6.2.1). It may do I/O (Vault); Process
// only calls it, once per message, and only for messages it is about to decrypt.
type Keyring interface {
	// KeysFor returns the keys whose certificates match any of ids; none is not an error. An error means the
	// keys could not be looked up (the message is reported undecryptable with reason key-unavailable, the
	// error in Result.Err). ctx is the request's: it bounds the lookup, and keys whose operations are remote
	// calls (a Vault Transit key) should run them under it, so that they stop when the request goes away.
	KeysFor(ctx context.Context, ids []cms.RecipientID) ([]Key, error)
}

// Status says what Process did with a message.
type Status int

const (
	// NotEncrypted: no encryption layer that the policy allows decrypting; served unchanged except for the
	// removal of X-Smimeproxy-* header fields.
	NotEncrypted Status = iota
	// Decrypted: the encryption layer was replaced by its plaintext.
	Decrypted
	// Undecryptable: an encryption layer the policy allows decrypting, but it could not be decrypted; served
	// as received with a status header field on top, or wrapped with an explanation (Options.Explain).
	Undecryptable
)

func (s Status) String() string {
	switch s {
	case NotEncrypted:
		return "not-encrypted"
	case Decrypted:
		return "decrypted"
	case Undecryptable:
		return "undecryptable"
	}
	return "unknown"
}

// Reason says why a message is Undecryptable. Its value is the reason parameter of the status header field.
type Reason string

// Reasons for Undecryptable (Result.Reason, UndecryptableError.Reason).
const (
	ReasonNoMatchingKey  Reason = "no-matching-key" // no key of ours is a recipient
	ReasonCorrupt        Reason = "corrupt"         // bad transfer encoding, malformed CMS, or decryption failed
	ReasonUnsupported    Reason = "unsupported"     // an algorithm package cms does not implement
	ReasonKeyUnavailable Reason = "key-unavailable" // the Keyring failed, or a key's remote operation did
	ReasonTooLarge       Reason = "too-large"       // over Options.MaxSize or a cms limit
)

// UndecryptableError is the cause of an Undecryptable Result (Result.Err), in the manner of crypto/x509's
// CertificateInvalidError: callers branch on Reason (errors.As), and Err is the failure underneath (the
// Keyring's error, a cms error; nil when there is none, as for no-matching-key), for logs. Neither holds
// anything of the message's content.
type UndecryptableError struct {
	Reason Reason
	Err    error
}

func (e *UndecryptableError) Error() string {
	if e.Err == nil {
		return "smime: undecryptable: " + string(e.Reason)
	}
	return "smime: undecryptable: " + string(e.Reason) + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *UndecryptableError) Unwrap() error { return e.Err }

// StatusHeader is the name of the header field Process puts on top of every message it decrypted or failed
// to decrypt. StatusPrefix starts the names of status fields, which are removed from upstream messages
// (IsStatusField has the definition, OwnedFields the names the proxy writes).
const (
	StatusHeader = "X-Smimeproxy-Status"
	StatusPrefix = "X-Smimeproxy-"
)

// DefaultMaxSize is the default for Options.MaxSize.
const DefaultMaxSize = 64 << 20

// Result is the outcome of Process.
type Result struct {
	// Served is exactly what the client must be served. It may alias the input when Status is NotEncrypted.
	Served []byte
	Status Status
	// Reason is set for Undecryptable: one of the Reason* constants (Err.Reason).
	Reason Reason
	// Err is the cause of Undecryptable, an *UndecryptableError; nil otherwise.
	Err error
	// Info describes the decryption (Decrypted only).
	Info cms.Info
	// Fingerprint is the SHA-256 of the certificate whose key decrypted the message, lowercase hex
	// (Decrypted only).
	Fingerprint string
	// Spent reports (Options.Owned only) that msg was overwritten before the message turned out not to
	// decrypt: the other fields are zero and Process must be run again, not Owned, on the original bytes.
	Spent bool
}

// Options tune Process. A nil *Options means the defaults.
type Options struct {
	// StatusParams are extra "k=v" parameters appended to the status header field, e.g. a marker that lets
	// the proxy recognise messages it served.
	StatusParams []string
	// MaxSize is the largest message that is decrypted; larger encrypted messages are Undecryptable with
	// reason too-large. Zero means DefaultMaxSize.
	MaxSize int64
	// Owned hands msg over to Process, which may then decode a base64 enveloped-data body in place inside
	// msg and decrypt it there, saving a copy of the message's size (for large messages). It does so only
	// after the first bytes of the body show an enveloped-data or authEnveloped-data ContentInfo. If the
	// message then does not decrypt, msg is spent: Result.Spent is true, nothing else is set, and the caller
	// must run Process again (not Owned) on the original bytes. A decrypted message, and one Process left
	// alone without decoding in place, give the same Result as without Owned.
	Owned bool
	// Explain serves an undecryptable message as an explanation wrapper: a multipart/mixed whose first part
	// says why it could not be decrypted and whose second part is the original (undecryptable.go). Without
	// it the original is served as it is, under the status field.
	Explain bool
}

// Process decides whether msg (a whole RFC 5322 message) carries an encryption layer that may be decrypted
// (see the package documentation for the policy), decrypts it with a key from kr, and returns what to serve.
// It never fails: every problem becomes a Result with Status Undecryptable (with the cause in Result.Err) or
// NotEncrypted. msg is not modified unless opts.Owned hands it over. kr may be nil (nothing can be decrypted
// then); ctx is passed to kr.KeysFor.
func Process(ctx context.Context, msg []byte, kr Keyring, opts *Options) Result {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	top := parseEntity(msg)
	d := decoder{owned: o.Owned}
	layer, cause := d.locate(&top, int64(len(msg)), o.MaxSize)
	if cause != nil {
		if d.spent {
			return Result{Spent: true}
		}
		return undecryptable(msg, cause, &o)
	}
	if layer == nil {
		if d.spent {
			return Result{Spent: true}
		}
		return Result{Served: StripStatusHeaders(msg), Status: NotEncrypted}
	}
	pt, info, cert, cause := d.decrypt(ctx, layer, kr)
	if cause != nil {
		if d.spent {
			return Result{Spent: true}
		}
		return undecryptable(msg, cause, &o)
	}
	return Result{
		Served:      serve(msg, pt, statusDecrypted(cert, info, &o)),
		Status:      Decrypted,
		Info:        info,
		Fingerprint: fingerprint(cert),
	}
}

// decoder decodes the transfer encoding of S/MIME bodies, in place inside the message when owned (see
// Options.Owned); spent records that it did.
type decoder struct {
	owned, spent bool
}

// decodeBody is the package function decodeBody, except that an owned message's base64 body that starts
// like (Auth)EnvelopedData is decoded in place.
func (d *decoder) decodeBody(e *entity) ([]byte, error) {
	if !d.owned || !strings.EqualFold(e.get("Content-Transfer-Encoding"), "base64") || !looksEnvelopedBase64(e.body) {
		return decodeBody(e)
	}
	d.spent = true
	return decodeBase64InPlace(e.body)
}

// encLayer is an encryption layer the policy allows decrypting.
type encLayer struct {
	ent *entity // the entity whose body is the CMS object
	e   *cms.Envelope
}

// errTooLarge is the cause of reason too-large for a message over Options.MaxSize.
var errTooLarge = errors.New("smime: message over the size limit")

// locate finds the encryption layer of msg (top) under the policy in the package doc. It returns (nil, nil)
// for a message that is not to be decrypted, and the cause when the layer exists but cannot be read.
func (d *decoder) locate(top *entity, size, max int64) (*encLayer, *UndecryptableError) {
	mt, params := top.contentType()
	if mt == "multipart/signed" {
		// RFC 8551 section 3.5.3 / RFC 1847 section 2.1: exactly two parts, the signed content first.
		parts := multipartParts(top.body, params["boundary"], 2)
		if len(parts) != 2 {
			return nil, nil
		}
		first := parseEntity(parts[0])
		ok, st := smimeLabel(&first)
		if !ok {
			return nil, nil
		}
		if size > max {
			if isSignedLabel(st) {
				return nil, nil
			}
			return nil, &UndecryptableError{Reason: ReasonTooLarge, Err: errTooLarge}
		}
		// Only enveloped content is decrypted here: an opaque signed-data inside would be a second
		// signature layer.
		return d.envelopeOf(&first)
	}
	ok, smimeType := smimeLabel(top)
	if !ok {
		return nil, nil
	}
	signedLabel := isSignedLabel(smimeType)
	if size > max {
		if signedLabel {
			return nil, nil // labelled signed and too large to look inside: leave it alone
		}
		return nil, &UndecryptableError{Reason: ReasonTooLarge, Err: errTooLarge}
	}
	buf, err := d.decodeBody(top)
	if err != nil {
		if signedLabel {
			return nil, nil
		}
		return nil, &UndecryptableError{Reason: ReasonCorrupt, Err: err}
	}
	if !looksSigned(buf) {
		env, err := cms.ParseOwned(buf)
		switch {
		case err == nil:
			return &encLayer{ent: top, e: env}, nil
		case errors.Is(err, cms.ErrNotEnveloped):
		case signedLabel:
			return nil, nil
		default:
			return nil, causeOf(err)
		}
	}
	// Opaque signed-data (RFC 8551 section 3.5.2): decrypt only when its eContent is, as a whole, an
	// encrypted entity; the signature is not verified here (the client sees the decrypted entity only).
	content, err := cms.SignedContent(buf)
	if err != nil {
		return nil, nil
	}
	inner := parseEntity(content)
	if ok, _ := smimeLabel(&inner); !ok {
		return nil, nil
	}
	return d.envelopeOf(&inner)
}

// envelopeOf decodes and parses the CMS object in e, which is labelled as S/MIME and sits under one signature
// layer. Anything but enveloped content there is not decrypted.
func (d *decoder) envelopeOf(e *entity) (*encLayer, *UndecryptableError) {
	_, smimeType := smimeLabel(e)
	signedLabel := isSignedLabel(smimeType)
	buf, err := d.decodeBody(e)
	if err != nil {
		if signedLabel {
			return nil, nil
		}
		return nil, &UndecryptableError{Reason: ReasonCorrupt, Err: err}
	}
	env, err := cms.ParseOwned(buf)
	switch {
	case err == nil:
		return &encLayer{ent: e, e: env}, nil
	case errors.Is(err, cms.ErrNotEnveloped), signedLabel:
		return nil, nil
	default:
		return nil, causeOf(err)
	}
}

// signedDataOID is the DER of the id-signedData OBJECT IDENTIFIER (RFC 5652 section 5.1).
var signedDataOID = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}

// looksSigned reports whether b starts like a ContentInfo of type signed-data (a SEQUENCE, definite or
// indefinite length, then the OID), so the opaque signed case goes straight to cms.SignedContent without a
// failed, message-sized cms.ParseOwned first. It only saves work: SignedContent checks the structure.
func looksSigned(b []byte) bool {
	if len(b) < 2 || b[0] != 0x30 {
		return false
	}
	p := 2
	if b[1] > 0x80 {
		p += int(b[1] & 0x7f)
	}
	return p < len(b) && bytes.HasPrefix(b[p:], signedDataOID)
}

// isSignedLabel reports whether an smime-type parameter (RFC 8551 section 3.2.2) says signed, not encrypted.
func isSignedLabel(smimeType string) bool {
	return smimeType == "signed-data" || smimeType == "certs-only"
}

// causeOf is the cause of Undecryptable for a cms error.
func causeOf(err error) *UndecryptableError {
	return &UndecryptableError{Reason: reasonOf(err), Err: err}
}

// reasonOf maps a cms error to an Undecryptable reason.
func reasonOf(err error) Reason {
	switch {
	case errors.Is(err, cms.ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, cms.ErrUnsupported):
		return ReasonUnsupported
	case errors.Is(err, cms.ErrNoRecipient):
		return ReasonNoMatchingKey
	case errors.Is(err, cms.ErrKeyOperation):
		// The key itself failed (e.g. Vault Transit unreachable): not the message's fault, retry later.
		return ReasonKeyUnavailable
	default:
		return ReasonCorrupt
	}
}

// decrypt asks kr for keys naming the layer's recipients and tries each whose certificate matches a
// recipient, in the order returned; the first success wins (RFC 5652 section 6.2: any RecipientInfo may be
// used).
func (d *decoder) decrypt(ctx context.Context, l *encLayer, kr Keyring) ([]byte, cms.Info, *x509.Certificate, *UndecryptableError) {
	ids := l.e.Recipients()
	if kr == nil || len(ids) == 0 {
		return nil, cms.Info{}, nil, &UndecryptableError{Reason: ReasonNoMatchingKey}
	}
	keys, err := kr.KeysFor(ctx, ids)
	if err != nil {
		return nil, cms.Info{}, nil, &UndecryptableError{Reason: ReasonKeyUnavailable, Err: err}
	}
	cause := &UndecryptableError{Reason: ReasonNoMatchingKey}
	env := l.e
	for _, k := range keys {
		if k.Cert == nil || k.Private == nil || !namesAny(ids, k.Cert) {
			continue
		}
		if env == nil {
			// A failed in-place decryption may have spent the buffer: decode and parse afresh (impossible
			// when the body itself was decoded in place: the caller starts again from the original).
			if d.spent {
				return nil, cms.Info{}, nil, cause
			}
			buf, err := d.decodeBody(l.ent)
			if err != nil {
				return nil, cms.Info{}, nil, &UndecryptableError{Reason: ReasonCorrupt, Err: err}
			}
			if env, err = cms.ParseOwned(buf); err != nil {
				return nil, cms.Info{}, nil, causeOf(err)
			}
		}
		pt, info, err := env.Decrypt(k.Cert, keyFor(k.Private))
		if err == nil {
			return pt, info, k.Cert, nil
		}
		env = nil
		r := reasonOf(err)
		if r != ReasonNoMatchingKey && (cause.Reason == ReasonNoMatchingKey || cause.Reason == ReasonKeyUnavailable || r == ReasonCorrupt) {
			cause = &UndecryptableError{Reason: r, Err: err}
		}
	}
	return nil, cms.Info{}, nil, cause
}

func namesAny(ids []cms.RecipientID, cert *x509.Certificate) bool {
	for _, id := range ids {
		if id.Matches(cert) {
			return true
		}
	}
	return false
}

func fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// statusDecrypted is the status header field of a decrypted message, with its CRLF.
func statusDecrypted(cert *x509.Certificate, info cms.Info, o *Options) []byte {
	auth := "no"
	if info.Authenticated {
		auth = "yes"
	}
	cipher := info.ContentCipher
	if cipher == "" {
		cipher = "unknown"
	}
	return statusLine("decrypted; key=sha256:"+fingerprint(cert)+"; cipher="+cipher+"; authenticated="+auth, o)
}

func statusLine(v string, o *Options) []byte {
	b := make([]byte, 0, len(StatusHeader)+len(v)+64)
	b = append(b, StatusHeader...)
	b = append(b, ": "...)
	b = append(b, v...)
	for _, p := range o.StatusParams {
		b = append(b, "; "...)
		b = append(b, p...)
	}
	return append(b, "\r\n"...)
}

// ServeUndecryptable returns the Result for msg served as undecryptable for reason (one of the Reason* constants):
// a status field with the reason (and opts' StatusParams) on top of msg minus its X-Smimeproxy-* fields (or,
// with opts.Explain, the explanation wrapper of undecryptable.go), which is what Process returns for such
// messages. A proxy uses it when it cannot even fetch a message whole.
func ServeUndecryptable(msg []byte, reason Reason, opts *Options) Result {
	var o Options
	if opts != nil {
		o = *opts
	}
	return undecryptable(msg, &UndecryptableError{Reason: reason}, &o)
}

// undecryptable serves msg as undecryptable with cause; the status field's reason is cause.Reason.
func undecryptable(msg []byte, cause *UndecryptableError, o *Options) Result {
	reason := cause.Reason
	status := statusLine("undecryptable; reason="+string(reason), o)
	if o.Explain {
		return Result{Served: explainUndecryptable(msg, reason, status), Status: Undecryptable, Reason: reason, Err: cause}
	}
	rest := StripStatusHeaders(msg)
	served := make([]byte, 0, len(status)+len(rest))
	served = append(append(served, status...), rest...)
	return Result{Served: served, Status: Undecryptable, Reason: reason, Err: cause}
}
