package smime

import (
	"bytes"
	"errors"
	"strings"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// This package reads MIME with internal/mimepart, the project's one reader: the helpers below only adapt its
// names to this package's code. Header fields are read with mimepart.EachField (its rules decide what a field
// is, and so what a status field is), multiparts split with mimepart.MultipartParts, transfer encodings undone
// with mimepart.Decode. Nothing copies bodies except decoding.

// field is one header field as mimepart.EachField reads it (RFC 5322 section 2.2).
type field struct {
	name []byte // field name, without the colon; for a line without a colon, the whole line
	raw  []byte
}

// entity is a MIME entity split into header and body (RFC 2045 section 2.4, RFC 5322 section 2.1) by
// mimepart.Split. Its header fields are read with eachField whenever they are needed: there is no limit on
// their number and nothing is stored per field.
type entity struct {
	header []byte // the header fields, without the empty line that ends them
	body   []byte // after the empty line; empty when there is none
}

// parseEntity splits b into header and body (mimepart.Split).
func parseEntity(b []byte) entity {
	h, body := mimepart.Split(b)
	return entity{header: h, body: body}
}

// firstField returns the first header field of e, if any.
func (e *entity) firstField() (field, bool) {
	var first field
	found := false
	eachField(e.header, func(f field) {
		if !found {
			first, found = f, true
		}
	})
	return first, found
}

// eachField is mimepart.EachField.
func eachField(b []byte, fn func(field)) int {
	return mimepart.EachField(b, func(f mimepart.Field) { fn(field{name: f.Name, raw: f.Raw}) })
}

func (f field) mp() mimepart.Field { return mimepart.Field{Name: f.name, Raw: f.raw} }

// value returns the unfolded value of f (mimepart.Field.Value).
func (f field) value() string { return f.mp().Value() }

func (f field) is(name string) bool { return f.mp().Is(name) }

func (f field) hasPrefix(prefix string) bool { return f.mp().HasPrefix(prefix) }

// isStatus reports whether f is a status field (IsStatusField): by name, or after a bare CR inside the field,
// which some readers take for a line end.
func (f field) isStatus() bool { return isStatusField(f.name, f.raw) }

// get returns the value of the first field called name, or "".
func (e *entity) get(name string) string { return mimepart.Get(e.header, name) }

// contentType returns the lowercased media type and parameters of e (mimepart.MediaType: a missing or
// unparsable Content-Type is text/plain, RFC 2045 section 5.2).
func (e *entity) contentType() (string, map[string]string) {
	return mimepart.MediaType(e.get("Content-Type"), "text/plain")
}

// filename returns the filename parameter of the Content-Disposition field (RFC 2183 section 2.3), or "".
func (e *entity) filename() string {
	_, params := mimepart.MediaType(e.get("Content-Disposition"), "")
	return params["filename"]
}

// smimeLabel reports whether e is labelled as a CMS object (RFC 8551 section 3.2.1:
// application/pkcs7-mime and the older application/x-pkcs7-mime; some agents send application/octet-stream
// named smime.p7m) and returns its lowercased smime-type parameter (section 3.2.2), possibly "".
func smimeLabel(e *entity) (bool, string) {
	mt, params := e.contentType()
	if !IsSMIMEType(mt, params) && (mt != "application/octet-stream" || !strings.EqualFold(e.filename(), "smime.p7m")) {
		return false, ""
	}
	return true, strings.ToLower(params["smime-type"])
}

// IsSMIMEType reports whether a part with this media type and these Content-Type parameters (as in an IMAP
// BODYSTRUCTURE, RFC 9051 section 7.5.2) may hold an S/MIME encryption layer: application/pkcs7-mime or
// application/x-pkcs7-mime (RFC 8551 section 3.2.1; smime-type is not trusted, it may be missing or be
// signed-data around an encrypted entity), or application/octet-stream with name=smime.p7m. It is a cheap
// pre-check for deciding which messages to fetch whole; Process decides by the content. Callers should apply
// it to the top-level body and, for a multipart/signed top level, to its first part. Parameter names are
// matched case-insensitively.
func IsSMIMEType(mediaType string, params map[string]string) bool {
	switch strings.ToLower(mediaType) {
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		return true
	case "application/octet-stream":
		for k, v := range params {
			if strings.EqualFold(k, "name") && strings.EqualFold(strings.TrimSpace(v), "smime.p7m") {
				return true
			}
		}
	}
	return false
}

// multipartParts is mimepart.MultipartParts: up to max+1 body parts of a multipart body (RFC 2046 section
// 5.1.1), preamble and epilogue dropped.
func multipartParts(body []byte, boundary string, max int) [][]byte {
	return mimepart.MultipartParts(body, boundary, max)
}

var errEncoding = errors.New("smime: bad content transfer encoding")

// decodeBody undoes e's Content-Transfer-Encoding (mimepart.Decode, RFC 2045 section 6) into a fresh buffer
// that the caller owns. It fails with errEncoding for broken base64 or quoted-printable and for unknown
// encodings.
func decodeBody(e *entity) ([]byte, error) {
	cte := e.get("Content-Transfer-Encoding")
	out, err := mimepart.Decode(cte, e.body)
	if err != nil {
		return nil, errEncoding
	}
	if mimepart.IsIdentity(mimepart.NormalizeEncoding(cte)) {
		out = append([]byte(nil), out...)
	}
	return out, nil
}

// DER of the ContentInfo content types that Options.Owned may decode in place (RFC 5652 section 6.1,
// RFC 5083 section 1.1).
var (
	envelopedDataOID     = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03}
	authEnvelopedDataOID = []byte{0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17}
)

// looksEnvelopedBase64 reports whether the base64 text b starts with a ContentInfo (a SEQUENCE of definite or
// indefinite length) of type enveloped-data or authEnveloped-data. It decodes only the first few bytes.
func looksEnvelopedBase64(b []byte) bool {
	var head [48]byte
	n, _ := mimepart.DecodeBase64Prefix(head[:], b)
	h := head[:n]
	if len(h) < 2 || h[0] != 0x30 {
		return false
	}
	p := 2
	if h[1] > 0x80 {
		p += int(h[1] & 0x7f)
	}
	return p < len(h) && (bytes.HasPrefix(h[p:], envelopedDataOID) || bytes.HasPrefix(h[p:], authEnvelopedDataOID))
}

// decodeBase64InPlace is mimepart.DecodeBase64InPlace, failing with errEncoding.
func decodeBase64InPlace(b []byte) ([]byte, error) {
	out, err := mimepart.DecodeBase64InPlace(b)
	if err != nil {
		return nil, errEncoding
	}
	return out, nil
}
