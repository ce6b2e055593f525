package cms

import (
	"encoding/asn1"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Limits on parts of an envelope (see doc.go). Both recipient limits are totals over the whole envelope, not
// per list, so that nested lists cannot multiply them (500 KeyAgreeRecipientInfos of 1024 keys each would
// otherwise be half a million recipients, hundreds of MB of bookkeeping for a 12 MB message); they are
// checked before each entry is stored, so parsing holds at most maxRecipientKeys entries.
const (
	maxRecipientInfos = 1024     // RecipientInfos of every kind (RFC 5652 section 6.2), skipped ones included
	maxRecipientKeys  = 1024     // KeyTransRecipientInfos plus the RecipientEncryptedKeys of all KeyAgreeRecipientInfos
	maxSmallField     = 64 << 10 // encrypted keys, parameters, authAttrs, mac, ukm
)

var (
	tagCtx0  = cbasn1.Tag(0).ContextSpecific()
	tagCtx0C = cbasn1.Tag(0).Constructed().ContextSpecific()
	tagCtx1C = cbasn1.Tag(1).Constructed().ContextSpecific()
	tagCtx2C = cbasn1.Tag(2).Constructed().ContextSpecific()
	tagCtx3C = cbasn1.Tag(3).Constructed().ContextSpecific()
	tagCtx4C = cbasn1.Tag(4).Constructed().ContextSpecific()
)

// algorithmIdentifier is an AlgorithmIdentifier (RFC 5280 section 4.1.1.2); params is the full TLV of the
// parameters, or nil when absent.
type algorithmIdentifier struct {
	oid    asn1.ObjectIdentifier
	params []byte
	raw    []byte // full TLV
}

// recipientInfo is one recipient we understand: a KeyTransRecipientInfo or one RecipientEncryptedKey of a
// KeyAgreeRecipientInfo (RFC 5652 sections 6.2.1, 6.2.2).
type recipientInfo struct {
	id           RecipientID
	kind         int // kindKeyTrans or kindKeyAgree
	keyAlg       algorithmIdentifier
	encryptedKey []byte
	// key agreement only
	originatorAlg algorithmIdentifier
	originatorKey []byte // raw public key from the BIT STRING
	ukm           []byte
}

const (
	kindKeyTrans = iota + 1
	kindKeyAgree
)

func readAlgorithm(s *cryptobyte.String) (algorithmIdentifier, bool) {
	var a algorithmIdentifier
	var raw, seq cryptobyte.String
	if !s.ReadASN1Element(&raw, cbasn1.SEQUENCE) {
		return a, false
	}
	outer := raw
	if !outer.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1ObjectIdentifier(&a.oid) {
		return a, false
	}
	if !seq.Empty() {
		var p cryptobyte.String
		var tag cbasn1.Tag
		if !seq.ReadAnyASN1Element(&p, &tag) || !seq.Empty() {
			return a, false
		}
		a.params = p
	}
	a.raw = raw
	return a, true
}

// readIssuerAndSerial reads IssuerAndSerialNumber (RFC 5652 section 10.2.4).
func readIssuerAndSerial(s *cryptobyte.String) (RecipientID, bool) {
	var seq, issuer cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1Element(&issuer, cbasn1.SEQUENCE) {
		return RecipientID{}, false
	}
	// Serial numbers are INTEGERs; some encoders emit non-minimal or negative ones, so read the raw bytes.
	var serial cryptobyte.String
	if !seq.ReadASN1(&serial, cbasn1.INTEGER) || !seq.Empty() || len(serial) == 0 || len(serial) > 64 {
		return RecipientID{}, false
	}
	n := new(big.Int).SetBytes(serial)
	if serial[0]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(serial))))
	}
	return RecipientID{IssuerRaw: []byte(issuer), SerialNumber: n}, true
}

// contentInfo splits a DER ContentInfo (RFC 5652 section 3) into its type and the content inside [0] EXPLICIT.
func contentInfo(der []byte) (asn1.ObjectIdentifier, cryptobyte.String, error) {
	var oid asn1.ObjectIdentifier
	s := cryptobyte.String(der)
	var ci, content cryptobyte.String
	if !s.ReadASN1(&ci, cbasn1.SEQUENCE) || !ci.ReadASN1ObjectIdentifier(&oid) {
		return nil, nil, malformed("bad content info")
	}
	if ci.Empty() {
		return oid, nil, nil
	}
	if !ci.ReadASN1(&content, tagCtx0C) || !ci.Empty() {
		return nil, nil, malformed("bad content info content")
	}
	return oid, content, nil
}

// ContentType returns the contentType OID of the ContentInfo in ber (DER or BER, RFC 5652 section 3), so callers
// decide by the content inside rather than by MIME labels. It fails with ErrMalformed or ErrTooLarge.
func ContentType(ber []byte) (asn1.ObjectIdentifier, error) {
	der, _, err := toDER(ber)
	if err != nil {
		return nil, err
	}
	oid, _, err := contentInfo(der)
	return oid, err
}

// openSignedData reads ber (DER or BER) as a ContentInfo of type SignedData and returns the contents of its
// SignedData SEQUENCE (RFC 5652 section 5.1): ErrNotSigned (wrapped) for another content type, ErrMalformed
// for a broken structure.
func openSignedData(ber []byte) (cryptobyte.String, error) {
	der, _, err := toDER(ber)
	if err != nil {
		return nil, err
	}
	oid, content, err := contentInfo(der)
	if err != nil {
		return nil, err
	}
	if !oid.Equal(OIDSignedData) {
		return nil, fmt.Errorf("%w: content type %v", ErrNotSigned, oid)
	}
	var sd cryptobyte.String
	if !content.ReadASN1(&sd, cbasn1.SEQUENCE) || !content.Empty() {
		return nil, malformed("bad signed-data")
	}
	return sd, nil
}

// SignedContent returns the encapsulated content (eContent, RFC 5652 section 5.2) of a SignedData ContentInfo
// (opaque signed-data), WITHOUT verifying any signature. It returns ErrNotSigned (wrapped) for other content
// types, ErrMalformed when the structure is broken or has no eContent (detached signature).
func SignedContent(ber []byte) ([]byte, error) {
	sd, err := openSignedData(ber)
	if err != nil {
		return nil, err
	}
	// SignedData ::= SEQUENCE { version, digestAlgorithms SET, encapContentInfo, ... } (RFC 5652 section 5.1)
	var eci, eContent cryptobyte.String
	var version int64
	var eType asn1.ObjectIdentifier
	if !sd.ReadASN1Integer(&version) || !sd.SkipASN1(cbasn1.SET) ||
		!sd.ReadASN1(&eci, cbasn1.SEQUENCE) || !eci.ReadASN1ObjectIdentifier(&eType) {
		return nil, malformed("bad signed-data")
	}
	if eci.Empty() {
		return nil, malformed("signed-data without encapsulated content (detached signature)")
	}
	var explicit cryptobyte.String
	if !eci.ReadASN1(&explicit, tagCtx0C) || !eci.Empty() || !explicit.ReadASN1(&eContent, cbasn1.OCTET_STRING) ||
		!explicit.Empty() {
		return nil, malformed("bad signed-data encapsulated content")
	}
	return eContent, nil
}

// Parse parses a DER or BER ContentInfo (including indefinite lengths and constructed OCTET STRINGs, as NSS and
// OpenSSL stream it) holding EnvelopedData (RFC 5652 section 6.1) or AuthEnvelopedData (RFC 5083 section 2.1).
// Other content types fail with ErrNotEnveloped (wrapped); broken structures with ErrMalformed; inputs beyond the
// limits in doc.go with ErrTooLarge. The Envelope may reference ber, which must not change while it is in use;
// when ber needed rewriting to DER the Envelope holds its own copy and ber may be dropped.
func Parse(ber []byte) (*Envelope, error) {
	return parse(ber, false)
}

// ParseOwned is Parse for a buffer the caller hands over: the Envelope may join segments and decrypt in place
// inside buf, so buf must not be used by the caller after a successful ParseOwned. It saves one message-sized
// allocation. buf is not modified before the content type is known to be (Auth)EnvelopedData: after
// ErrNotEnveloped, ErrMalformed in the ContentInfo, or ErrTooLarge from the BER reader it is intact (so the
// caller may still pass it to SignedContent).
func ParseOwned(buf []byte) (*Envelope, error) {
	return parse(buf, true)
}

func parse(ber []byte, owned bool) (*Envelope, error) {
	der, copied, err := toDER(ber)
	if err != nil {
		return nil, err
	}
	oid, content, err := contentInfo(der)
	if err != nil {
		return nil, err
	}
	e := &Envelope{owned: owned || copied}
	switch {
	case oid.Equal(OIDEnvelopedData):
	case oid.Equal(OIDAuthEnvelopedData):
		e.auth = true
	default:
		return nil, fmt.Errorf("%w: content type %v", ErrNotEnveloped, oid)
	}
	var ed cryptobyte.String
	var version int64
	if !content.ReadASN1(&ed, cbasn1.SEQUENCE) || !content.Empty() || !ed.ReadASN1Integer(&version) {
		return nil, malformed("bad enveloped-data")
	}
	if version < 0 || version > 4 {
		return nil, fmt.Errorf("%w: enveloped-data version %d", ErrUnsupported, version)
	}
	// originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL: certificates and CRLs, not needed to decrypt.
	if ed.PeekASN1Tag(tagCtx0C) && !ed.SkipASN1(tagCtx0C) {
		return nil, malformed("bad originator info")
	}
	var ris cryptobyte.String
	if !ed.ReadASN1(&ris, cbasn1.SET) {
		return nil, malformed("bad recipient infos")
	}
	if err := e.readRecipientInfos(ris); err != nil {
		return nil, err
	}
	// EncryptedContentInfo (RFC 5652 section 6.1).
	var eci cryptobyte.String
	var ctype asn1.ObjectIdentifier
	if !ed.ReadASN1(&eci, cbasn1.SEQUENCE) || !eci.ReadASN1ObjectIdentifier(&ctype) {
		return nil, malformed("bad encrypted content info")
	}
	var ok bool
	if e.contentAlg, ok = readAlgorithm(&eci); !ok {
		return nil, malformed("bad content encryption algorithm")
	}
	switch {
	case eci.Empty():
		return nil, fmt.Errorf("%w: detached encrypted content", ErrUnsupported)
	case eci.PeekASN1Tag(tagCtx0):
		var c cryptobyte.String
		if !eci.ReadASN1(&c, tagCtx0) {
			return nil, malformed("bad encrypted content")
		}
		e.encrypted = c
	case eci.PeekASN1Tag(tagCtx0C):
		// [0] IMPLICIT OCTET STRING sent constructed (BER streaming): its segments are OCTET STRINGs,
		// already flattened one level by the DER rewrite (X.690 section 8.7.3).
		var c cryptobyte.String
		if !eci.ReadASN1(&c, tagCtx0C) {
			return nil, malformed("bad encrypted content")
		}
		e.encrypted = e.joinSegments(c)
		if e.encrypted == nil {
			return nil, malformed("bad encrypted content segments")
		}
	default:
		return nil, malformed("bad encrypted content")
	}
	if !eci.Empty() {
		return nil, malformed("trailing data in encrypted content info")
	}
	if e.auth {
		// AuthEnvelopedData: authAttrs [1] IMPLICIT, mac OCTET STRING, unauthAttrs [2] (RFC 5083 section 2.1).
		if ed.PeekASN1Tag(tagCtx1C) {
			var attrs cryptobyte.String
			if !ed.ReadASN1Element(&attrs, tagCtx1C) {
				return nil, malformed("bad auth attributes")
			}
			if len(attrs) > maxSmallField {
				return nil, fmt.Errorf("%w: auth attributes of %d bytes", ErrTooLarge, len(attrs))
			}
			e.authAttrs = append([]byte(nil), attrs...)
		}
		var mac cryptobyte.String
		if !ed.ReadASN1(&mac, cbasn1.OCTET_STRING) {
			return nil, malformed("bad mac")
		}
		if len(mac) > maxSmallField {
			return nil, fmt.Errorf("%w: mac of %d bytes", ErrTooLarge, len(mac))
		}
		e.mac = append([]byte(nil), mac...)
		if ed.PeekASN1Tag(tagCtx2C) && !ed.SkipASN1(tagCtx2C) {
			return nil, malformed("bad unauthenticated attributes")
		}
	} else if ed.PeekASN1Tag(tagCtx1C) && !ed.SkipASN1(tagCtx1C) {
		return nil, malformed("bad unprotected attributes")
	}
	if !ed.Empty() {
		return nil, malformed("trailing data in enveloped-data")
	}
	return e, nil
}

// joinSegments returns the concatenated contents of the OCTET STRING segments in c. When the Envelope owns its
// buffer the segments are moved together in place (each segment only moves towards lower addresses, over the
// headers already consumed); otherwise they are copied once into a fresh buffer, which the Envelope then owns.
// It returns nil when c holds anything but primitive OCTET STRINGs.
func (e *Envelope) joinSegments(c cryptobyte.String) []byte {
	total := 0
	for s := c; !s.Empty(); {
		var seg cryptobyte.String
		if !s.ReadASN1(&seg, cbasn1.OCTET_STRING) {
			return nil
		}
		total += len(seg)
	}
	var out []byte
	if e.owned {
		out = c[:0]
	} else {
		out = make([]byte, 0, total)
		e.owned = true
	}
	for s := c; !s.Empty(); {
		var seg cryptobyte.String
		s.ReadASN1(&seg, cbasn1.OCTET_STRING)
		out = append(out, seg...) // in place: copy handles the overlap, dst never passes src
	}
	return out
}

func (e *Envelope) readRecipientInfos(ris cryptobyte.String) error {
	count := 0
	for !ris.Empty() {
		count++
		if count > maxRecipientInfos {
			return fmt.Errorf("%w: more than %d recipient infos", ErrTooLarge, maxRecipientInfos)
		}
		switch {
		case ris.PeekASN1Tag(cbasn1.SEQUENCE):
			var ktri cryptobyte.String
			if !ris.ReadASN1(&ktri, cbasn1.SEQUENCE) {
				return malformed("bad key transport recipient info")
			}
			if len(e.recipients) >= maxRecipientKeys {
				return fmt.Errorf("%w: more than %d recipient keys in total", ErrTooLarge, maxRecipientKeys)
			}
			ri, err := readKeyTrans(ktri)
			if err != nil {
				return err
			}
			e.recipients = append(e.recipients, ri)
		case ris.PeekASN1Tag(tagCtx1C):
			var kari cryptobyte.String
			if !ris.ReadASN1(&kari, tagCtx1C) {
				return malformed("bad key agreement recipient info")
			}
			if err := readKeyAgree(kari, &e.recipients); err != nil {
				return err
			}
		case ris.PeekASN1Tag(tagCtx2C), ris.PeekASN1Tag(tagCtx3C), ris.PeekASN1Tag(tagCtx4C):
			// KEKRecipientInfo, PasswordRecipientinfo, OtherRecipientInfo: not for a certificate; skipped.
			var skip cryptobyte.String
			var tag cbasn1.Tag
			if !ris.ReadAnyASN1Element(&skip, &tag) {
				return malformed("bad recipient info")
			}
		default:
			return malformed("unknown recipient info choice")
		}
	}
	return nil
}

// readCertID reads a RecipientIdentifier or SignerIdentifier (RFC 5652 sections 6.2.1 and 5.3), the same
// CHOICE of issuerAndSerialNumber and [0] SubjectKeyIdentifier; who ("recipient", "signer") names it in errors.
func readCertID(s *cryptobyte.String, who string) (RecipientID, error) {
	switch {
	case s.PeekASN1Tag(cbasn1.SEQUENCE):
		id, ok := readIssuerAndSerial(s)
		if !ok {
			return RecipientID{}, malformed("bad %s issuer and serial number", who)
		}
		return id, nil
	case s.PeekASN1Tag(tagCtx0):
		var ski cryptobyte.String
		if !s.ReadASN1(&ski, tagCtx0) || len(ski) == 0 {
			return RecipientID{}, malformed("bad %s subject key identifier", who)
		}
		return RecipientID{SubjectKeyID: []byte(ski)}, nil
	}
	return RecipientID{}, malformed("bad %s identifier", who)
}

// readKeyTrans reads a KeyTransRecipientInfo (RFC 5652 section 6.2.1).
func readKeyTrans(s cryptobyte.String) (recipientInfo, error) {
	ri := recipientInfo{kind: kindKeyTrans}
	var version int64
	if !s.ReadASN1Integer(&version) {
		return ri, malformed("bad key transport recipient info version")
	}
	var err error
	if ri.id, err = readCertID(&s, "recipient"); err != nil {
		return ri, err
	}
	var ok bool
	if ri.keyAlg, ok = readAlgorithm(&s); !ok {
		return ri, malformed("bad key encryption algorithm")
	}
	var ek cryptobyte.String
	if !s.ReadASN1(&ek, cbasn1.OCTET_STRING) || !s.Empty() {
		return ri, malformed("bad encrypted key")
	}
	if len(ek) > maxSmallField {
		return ri, fmt.Errorf("%w: encrypted key of %d bytes", ErrTooLarge, len(ek))
	}
	ri.encryptedKey = ek
	return ri, nil
}

// readKeyAgree reads a KeyAgreeRecipientInfo (RFC 5652 section 6.2.2) and appends one recipientInfo per
// RecipientEncryptedKey to out, failing with ErrTooLarge before out would exceed maxRecipientKeys entries.
// Only an originatorKey (ephemeral-static, RFC 5753 section 3.1.1) is supported; the other originator forms
// (static-static) fail with ErrUnsupported.
func readKeyAgree(s cryptobyte.String, out *[]recipientInfo) error {
	var version int64
	var orig, origKey cryptobyte.String
	if !s.ReadASN1Integer(&version) || !s.ReadASN1(&orig, tagCtx0C) {
		return malformed("bad key agreement recipient info")
	}
	if !orig.PeekASN1Tag(tagCtx1C) {
		return fmt.Errorf("%w: key agreement originator is not an ephemeral public key", ErrUnsupported)
	}
	base := recipientInfo{kind: kindKeyAgree}
	var bits asn1.BitString
	var ok bool
	if !orig.ReadASN1(&origKey, tagCtx1C) || !orig.Empty() {
		return malformed("bad originator public key")
	}
	if base.originatorAlg, ok = readAlgorithm(&origKey); !ok || !origKey.ReadASN1BitString(&bits) ||
		!origKey.Empty() || bits.BitLength%8 != 0 {
		return malformed("bad originator public key")
	}
	base.originatorKey = bits.Bytes
	if s.PeekASN1Tag(tagCtx1C) {
		var ukmExp, ukm cryptobyte.String
		if !s.ReadASN1(&ukmExp, tagCtx1C) || !ukmExp.ReadASN1(&ukm, cbasn1.OCTET_STRING) || !ukmExp.Empty() {
			return malformed("bad user keying material")
		}
		if len(ukm) > maxSmallField {
			return fmt.Errorf("%w: ukm of %d bytes", ErrTooLarge, len(ukm))
		}
		base.ukm = ukm
	}
	if base.keyAlg, ok = readAlgorithm(&s); !ok {
		return malformed("bad key agreement algorithm")
	}
	var reks cryptobyte.String
	if !s.ReadASN1(&reks, cbasn1.SEQUENCE) || !s.Empty() {
		return malformed("bad recipient encrypted keys")
	}
	for !reks.Empty() {
		if len(*out) >= maxRecipientKeys {
			return fmt.Errorf("%w: more than %d recipient keys in total", ErrTooLarge, maxRecipientKeys)
		}
		var rek cryptobyte.String
		if !reks.ReadASN1(&rek, cbasn1.SEQUENCE) {
			return malformed("bad recipient encrypted key")
		}
		ri := base
		switch {
		case rek.PeekASN1Tag(cbasn1.SEQUENCE):
			id, ok := readIssuerAndSerial(&rek)
			if !ok {
				return malformed("bad issuer and serial number")
			}
			ri.id = id
		case rek.PeekASN1Tag(tagCtx0C):
			// rKeyId [0] IMPLICIT RecipientKeyIdentifier: subjectKeyIdentifier, date, other.
			var rkid, ski cryptobyte.String
			if !rek.ReadASN1(&rkid, tagCtx0C) || !rkid.ReadASN1(&ski, cbasn1.OCTET_STRING) || len(ski) == 0 {
				return malformed("bad recipient key identifier")
			}
			ri.id = RecipientID{SubjectKeyID: []byte(ski)}
		default:
			return malformed("bad key agreement recipient identifier")
		}
		var ek cryptobyte.String
		if !rek.ReadASN1(&ek, cbasn1.OCTET_STRING) || !rek.Empty() {
			return malformed("bad encrypted key")
		}
		if len(ek) > maxSmallField {
			return fmt.Errorf("%w: encrypted key of %d bytes", ErrTooLarge, len(ek))
		}
		ri.encryptedKey = ek
		*out = append(*out, ri)
	}
	return nil
}
