package decrypt

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// EncryptToSelf encrypts msg to certs (normally the user's own certificates) as an S/MIME enveloped-data
// message (RFC 8551 section 3.3): the MIME entity made of msg's Content-* fields and body, in canonical CRLF
// form, becomes the content of a CMS EnvelopedData (RFC 5652 section 6) made by cms.Encrypt: AES-256-CBC
// content encryption and, for an RSA certificate, PKCS#1 v1.5 key transport (RFC 3370 section 4.2.1), each
// certificate named by issuer and serial number. The other header fields (From, Subject, Date, ...) stay in the clear in the outer header; fields
// named X-Smimeproxy-* are dropped. A message that is already encrypted (alreadyEncrypted) is returned
// unchanged; signed-only S/MIME (opaque signed-data, multipart/signed) is encrypted like any other message.
// It fails when certs is empty or holds a key cms.Encrypt cannot encrypt to (cms.ErrRecipientKey).
//
// A message whose header was protected (RFC 9788: its Content-Type, or that of the first part of a top-level
// multipart/signed, has the hp parameter, or the older protected-headers) is typically a served copy of such
// a message; it is encrypted with header protection again (protectHeaders), so that the fields the original
// kept inside the encryption do not come out in the clear.
//
// `serve --encrypt-appends` encrypts an APPEND that Origin does not recognise the same way, except that the
// content is then the appended message itself, byte for byte (Decrypter.EncryptAppend, verbatim.go).
func EncryptToSelf(msg []byte, certs []*x509.Certificate) ([]byte, error) {
	return encryptToSelf(msg, certs, nil)
}

// encryptToSelf is EncryptToSelf. When verbatim is not nil and the message has no header protection, the
// content of the EnvelopedData is msg without its X-Smimeproxy-* fields, every other byte as it is (header
// fields included, line ends unchanged), and verbatim(content) (a header field with its CRLF) is added to the
// outer header, which holds the same fields as without verbatim.
func encryptToSelf(msg []byte, certs []*x509.Certificate, verbatim func(content []byte) []byte) ([]byte, error) {
	if len(certs) == 0 {
		return nil, errors.New("decrypt: encrypt: no certificate")
	}
	if alreadyEncrypted(msg) {
		return msg, nil
	}
	header, body := mimepart.Split(msg)
	var outer, inner bytes.Buffer
	var fields []headerField // all but the dropped ones, in order
	for _, f := range headerFields(header) {
		name := strings.ToLower(f.name)
		switch {
		case smime.IsStatusField(f.raw), name == "mime-version":
			continue
		case strings.HasPrefix(name, "content-"):
			inner.Write(f.raw)
		default:
			outer.Write(f.raw)
		}
		fields = append(fields, f)
	}
	hp := headerProtection(fields, body)
	if hp != "" {
		outer.Reset()
		inner.Reset()
		protectHeaders(&outer, &inner, fields, hp)
	}
	var content []byte
	if verbatim != nil && hp == "" {
		content = smime.StripStatusHeaders(msg)
		outer.Write(verbatim(content))
	} else {
		inner.WriteString("\r\n")
		inner.Write(toCRLF(body))
		content = inner.Bytes()
	}

	der, err := cms.Encrypt(content, certs, nil) // AES-256-CBC, the widest read (RFC 8551 section 2.7)
	if err != nil {
		return nil, fmt.Errorf("decrypt: encrypt: %w", err)
	}
	outer.WriteString("MIME-Version: 1.0\r\n")
	outer.WriteString("Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n")
	outer.WriteString("Content-Disposition: attachment; filename=smime.p7m\r\n")
	outer.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(der)
	for len(enc) > 76 {
		outer.WriteString(enc[:76])
		outer.WriteString("\r\n")
		enc = enc[76:]
	}
	outer.WriteString(enc)
	outer.WriteString("\r\n")
	return outer.Bytes(), nil
}

// hpOuterField is the RFC 9788 section 2.2.1 field that records, inside the Cryptographic Payload, each
// non-structural field of the outer header as sent: "HP-Outer: Subject: [...]".
const hpOuterField = "HP-Outer"

// obscuredSubject is the outer Subject of a message whose header is protected with confidentiality (RFC 9788
// section 3.2, every Header Confidentiality Policy that obscures the Subject).
const obscuredSubject = "[...]"

// headerProtection returns "cipher" or "clear" when the message (its header fields without status fields, and
// its body) carries protected header fields: hp on the top-level Content-Type or on that of the first part of
// a top-level multipart/signed (RFC 9788 section 2.1.1, the Cryptographic Payload of a signed message), or
// the older protected-headers parameter (taken as "cipher"). Any hp value other than "clear" is taken as
// "cipher". It returns "" for a message without them.
func headerProtection(fields []headerField, body []byte) string {
	var ct string
	for _, f := range fields {
		if strings.EqualFold(f.name, "Content-Type") {
			ct = mimepart.Values(f.raw, "Content-Type")[0]
			break
		}
	}
	mt, params := mimepart.MediaType(ct, "")
	if hp := hpOf(params); hp != "" || mt != "multipart/signed" {
		return hp
	}
	parts := mimepart.MultipartParts(body, params["boundary"], 0)
	if len(parts) == 0 {
		return ""
	}
	_, pp := mimepart.MediaType(mimepart.Get(parts[0], "Content-Type"), "")
	return hpOf(pp)
}

func hpOf(params map[string]string) string {
	switch hp := strings.ToLower(params["hp"]); {
	case hp == "clear":
		return "clear"
	case hp != "", params["protected-headers"] != "":
		return "cipher"
	}
	return ""
}

// protectHeaders writes the outer header and the Cryptographic Payload's header (both without the empty line)
// of a message with header protection (RFC 9788 section 2): every field goes inside, the top-level inner
// Content-Type says hp (a multipart/signed's too: the parameter is outside the signature, which covers only the
// first part), and old HP-Outer fields are replaced.
//
// With hp="clear" the outer header holds copies of the non-MIME fields, as without protection. With
// hp="cipher" the outer header shows no more than the original message did: when HP-Outer fields (section
// 2.2.1) record the original outer header, exactly those fields; otherwise only From and Date (required,
// RFC 5322 section 3.6) and Subject "[...]". To, Cc, Message-ID and every other field are then inside only.
// The new outer fields are recorded in new HP-Outer fields inside.
func protectHeaders(outer, inner *bytes.Buffer, fields []headerField, hp string) {
	var recorded []string // values of the old HP-Outer fields: "Name: value"
	for _, f := range fields {
		if strings.EqualFold(f.name, hpOuterField) {
			recorded = append(recorded, mimepart.Values(f.raw, f.name)[0])
		}
	}
	var outerFields []string // "Name: value" lines of the new outer header
	structural := func(name string) bool {
		n := strings.ToLower(name)
		return strings.HasPrefix(n, "content-") || n == "mime-version" || n == strings.ToLower(hpOuterField) ||
			strings.HasPrefix(n, strings.ToLower(StatusFieldPrefix))
	}
	switch {
	case hp == "clear":
		for _, f := range fields {
			if !structural(f.name) {
				outer.Write(f.raw)
			}
		}
	case len(recorded) > 0:
		for _, r := range recorded {
			name, value, ok := strings.Cut(r, ":")
			if name = strings.TrimSpace(name); ok && name != "" && !structural(name) && !strings.ContainsAny(name, " \t") {
				outerFields = append(outerFields, name+": "+strings.TrimSpace(value))
			}
		}
	default:
		for _, f := range fields {
			switch {
			case strings.EqualFold(f.name, "From"), strings.EqualFold(f.name, "Date"):
				outerFields = append(outerFields, f.name+": "+mimepart.Values(f.raw, f.name)[0])
			case strings.EqualFold(f.name, "Subject"):
				outerFields = append(outerFields, f.name+": "+obscuredSubject)
			}
		}
	}
	for _, l := range outerFields {
		outer.WriteString(l + "\r\n")
	}

	ctDone := false
	for _, f := range fields {
		switch {
		case strings.EqualFold(f.name, hpOuterField):
			if hp == "clear" {
				inner.Write(f.raw)
			}
		case !ctDone && strings.EqualFold(f.name, "Content-Type"):
			ctDone = true
			v := mimepart.Values(f.raw, f.name)[0]
			if _, params := mimepart.MediaType(v, ""); params["hp"] == "" {
				inner.WriteString(f.name + ": " + v + "; hp=\"" + hp + "\"\r\n")
				continue
			}
			inner.Write(f.raw)
		default:
			inner.Write(f.raw)
		}
	}
	if hp == "cipher" {
		for _, l := range outerFields {
			inner.WriteString(hpOuterField + ": " + l + "\r\n")
		}
	}
}

// alreadyEncrypted reports whether msg is S/MIME-encrypted as a whole (RFC 8551 section 3.2):
// application/(x-)pkcs7-mime with smime-type enveloped-data or authEnveloped-data, or, without smime-type,
// whose CMS content type is EnvelopedData or AuthEnvelopedData. Signed-data is signed, not encrypted: storing
// it would store its content in clear.
func alreadyEncrypted(msg []byte) bool {
	header, body := mimepart.Split(msg)
	v := mimepart.Values(header, "Content-Type")
	if len(v) == 0 {
		return false
	}
	mt, params := mimepart.MediaType(v[0], "")
	if mt != "application/pkcs7-mime" && mt != "application/x-pkcs7-mime" {
		return false
	}
	switch strings.ToLower(params["smime-type"]) {
	case "enveloped-data", "authenveloped-data":
	case "":
	default:
		return false
	}
	// The parameter is advice: the content decides (a forged parameter must not let plaintext through).
	der := body
	if cte := mimepart.Values(header, "Content-Transfer-Encoding"); len(cte) > 0 && mimepart.NormalizeEncoding(cte[0]) == "base64" {
		dec, err := mimepart.DecodeBase64(body)
		if err != nil {
			return false
		}
		der = dec
	}
	oid, err := cms.ContentType(der)
	return err == nil && (oid.Equal(cms.OIDEnvelopedData) || oid.Equal(cms.OIDAuthEnvelopedData))
}

type headerField struct {
	name string
	raw  []byte // the whole field with continuation lines, CRLF line ends
}

// headerFields splits a header into fields (mimepart.EachField), keeping folding (RFC 5322 section 2.2.3)
// with every line ended by CRLF. A line without a colon is not a field and is dropped with its continuation
// lines.
func headerFields(header []byte) []headerField {
	var out []headerField
	mimepart.EachField(header, func(f mimepart.Field) {
		first, _, _ := bytes.Cut(f.Raw, []byte("\n"))
		if bytes.IndexByte(first, ':') < 0 {
			return // not a field: dropped
		}
		var raw []byte
		for _, line := range bytes.SplitAfter(f.Raw, []byte("\n")) {
			if len(line) > 0 {
				raw = append(append(raw, bytes.TrimRight(line, "\r\n")...), '\r', '\n')
			}
		}
		out = append(out, headerField{name: string(f.Name), raw: raw})
	})
	return out
}

// toCRLF turns every bare LF into CRLF (RFC 8551 section 3.1.1 canonical form).
func toCRLF(b []byte) []byte {
	n := bytes.Count(b, []byte("\n")) - bytes.Count(b, []byte("\r\n"))
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}
