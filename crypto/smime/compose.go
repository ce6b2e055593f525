package smime

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime/quotedprintable"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
)

// Composing outgoing S/MIME (RFC 8551): the sending half. A message is split into its outer header (From, To,
// Subject, ... : everything but the Content-* fields and MIME-Version) and its MIME entity (the Content-* fields
// and the body). Sign replaces the entity by a clear-signed multipart/signed (section 3.5.3), Encrypt by an
// application/pkcs7-mime enveloped-data or authEnveloped-data (sections 3.3, 3.4); the outer header stays as it
// was. Signing and then encrypting the result gives the usual signed-then-encrypted message (section 3.6).

// ErrAlreadyProtected: the message is already signed or encrypted at the top level; it is sent as it is.
var ErrAlreadyProtected = errors.New("smime: message is already signed or encrypted")

// IsProtected reports whether msg's top-level Content-Type is already S/MIME: multipart/signed,
// application/(x-)pkcs7-mime, or application/octet-stream named smime.p7m. A client that signs or encrypts by
// itself is left alone.
func IsProtected(msg []byte) bool {
	top := parseEntity(msg)
	mt, params := top.contentType()
	return mt == "multipart/signed" || IsSMIMEType(mt, params)
}

// splitOuter returns the outer header fields of msg (CRLF line ends) and its MIME entity: the Content-* fields
// (MIME-Version dropped, it is written again) and the body, canonicalized (Canonicalize).
//
// With header protection (hp is HPCipher or HPClear, RFC 9788 section 2) the entity is the Cryptographic
// Payload: its Content-Type gets the hp parameter and its header carries a copy of every outer field (section
// 4.1). With HPCipher the outer header is then obscured as the hcp_baseline policy does (section 3.2.3): the
// Subject becomes "[...]", Keywords and Comments are removed, every other field stays as it was; and the
// payload records each outer field as sent in an HP-Outer field (section 2.2), so the recipient can tell which
// outer fields the sender wrote.
func splitOuter(msg []byte, hp string) (outer, entity []byte) {
	top := parseEntity(msg)
	var o, inner, copies, hpOuter bytes.Buffer
	hasCT := false
	eachField(top.header, func(f field) {
		switch {
		case len(f.name) == 0 || f.is("MIME-Version"):
		case f.hasPrefix("Content-"):
			raw := withCRLF(f.raw)
			if hp != "" && f.is("Content-Type") && !hasCT {
				raw = withHPParam(raw, hp)
			}
			hasCT = hasCT || f.is("Content-Type")
			inner.Write(raw)
		default:
			raw := withCRLF(f.raw)
			if hp != "" {
				copies.Write(raw)
			}
			if hp == HPCipher {
				switch {
				case f.is("Subject"):
					raw = []byte("Subject: [...]\r\n")
				case f.is("Keywords"), f.is("Comments"):
					return
				}
				hpOuter.WriteString("HP-Outer: ")
				hpOuter.Write(raw)
			}
			o.Write(raw)
		}
	})
	if !hasCT {
		// RFC 2045 section 5.2: no Content-Type is text/plain; US-ASCII. 8-bit text without one is taken as UTF-8.
		cs := "us-ascii"
		if !is7bit(top.body) {
			cs = "utf-8"
		}
		ct := []byte("Content-Type: text/plain; charset=" + cs + "\r\n")
		if hp != "" {
			ct = withHPParam(ct, hp)
		}
		inner.Write(ct)
	}
	inner.Write(copies.Bytes())
	inner.Write(hpOuter.Bytes())
	inner.WriteString("\r\n")
	inner.Write(top.body)
	return o.Bytes(), Canonicalize(inner.Bytes())
}

// withCRLF returns a header field with CRLF line ends, ending in CRLF even when it was the unterminated last
// line of a message without a body.
func withCRLF(raw []byte) []byte {
	raw = toCRLFBytes(raw)
	if !bytes.HasSuffix(raw, []byte("\r\n")) {
		raw = append(raw[:len(raw):len(raw)], '\r', '\n')
	}
	return raw
}

// withHPParam returns a Content-Type field (ending in CRLF) with the hp parameter of RFC 9788 section 2.1.1
// appended.
func withHPParam(raw []byte, hp string) []byte {
	v := bytes.TrimRight(raw, " \t\r\n;")
	out := make([]byte, 0, len(v)+len(hp)+10)
	out = append(out, v...)
	return append(out, "; hp=\""+hp+"\"\r\n"...)
}

// Header protection (RFC 9788): the values of the hp parameter on the Cryptographic Payload's Content-Type
// (section 2.1.1), for SignProtected.
const (
	// HPCipher: the message will be encrypted; the outer header is obscured (hcp_baseline).
	HPCipher = "cipher"
	// HPClear: the message is signed only; the outer header stays as it is, the payload carries a signed copy.
	HPClear = "clear"
)

// Sign returns msg clear-signed (RFC 8551 section 3.5.3): the outer header fields, then multipart/signed with
// micalg sha-256 whose first part is msg's MIME entity in canonical form (Canonicalize: CRLF, and 8-bit or
// binary content re-encoded as quoted-printable or base64, so that the signature survives any transport) and
// whose second part is the detached CMS signature (cms.Sign) by signer, whose certificate is chain[0].
// A message that IsProtected fails with ErrAlreadyProtected.
func Sign(msg []byte, signer crypto.Signer, chain []*x509.Certificate, opts *cms.SignOptions) ([]byte, error) {
	return sign(msg, signer, chain, opts, "")
}

// SignProtected is Sign with RFC 9788 header protection (section 4.1): the signed entity is the Cryptographic
// Payload, whose Content-Type has hp=hp and whose header carries a copy of msg's header fields (splitOuter).
// With HPCipher the outer header of the result is obscured (its Subject is "[...]") and the caller encrypts
// the result next (Encrypt): the real Subject is then only inside the encryption. With HPClear the outer
// header is unchanged and the payload's copy is covered by the signature.
func SignProtected(msg []byte, signer crypto.Signer, chain []*x509.Certificate, opts *cms.SignOptions, hp string) ([]byte, error) {
	if hp != HPCipher && hp != HPClear {
		return nil, fmt.Errorf("smime: header protection %q: want %q or %q", hp, HPCipher, HPClear)
	}
	return sign(msg, signer, chain, opts, hp)
}

func sign(msg []byte, signer crypto.Signer, chain []*x509.Certificate, opts *cms.SignOptions, hp string) ([]byte, error) {
	if IsProtected(msg) {
		return nil, ErrAlreadyProtected
	}
	outer, entity := splitOuter(msg, hp)
	sig, err := cms.Sign(entity, signer, chain, opts)
	if err != nil {
		return nil, err
	}
	boundary, err := newBoundary()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(len(outer) + len(entity) + len(sig)*4/3 + 1024)
	b.Write(outer)
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString(`Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="` + boundary + "\"\r\n\r\n")
	b.WriteString("This is a cryptographically signed message in MIME format.\r\n\r\n")
	b.WriteString("--" + boundary + "\r\n")
	b.Write(entity)
	b.WriteString("\r\n--" + boundary + "\r\n")
	b.WriteString("Content-Type: application/pkcs7-signature; name=smime.p7s\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n")
	b.WriteString("Content-Disposition: attachment; filename=smime.p7s\r\n")
	b.WriteString("Content-Description: S/MIME Cryptographic Signature\r\n\r\n")
	writeBase64Lines(&b, sig)
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes(), nil
}

// Encrypt returns msg encrypted to certs (RFC 8551 section 3.3): the outer header fields, then an
// application/pkcs7-mime whose content is msg's MIME entity in canonical form, as an EnvelopedData with
// AES-256-CBC, or with opts.Authenticated an AuthEnvelopedData with AES-256-GCM (smime-type
// authEnveloped-data, RFC 8551 section 3.4). A message that is already encrypted fails with
// ErrAlreadyProtected; a signed one (Sign's result) is encrypted as any other.
func Encrypt(msg []byte, certs []*x509.Certificate, opts *cms.EncryptOptions) ([]byte, error) {
	return encrypt(msg, certs, opts, "")
}

// EncryptProtected is Encrypt with RFC 9788 header protection for a message that is not signed: the encrypted
// entity is the Cryptographic Payload, with hp="cipher" and a copy of msg's header fields, and the outer header
// is obscured (splitOuter with HPCipher: Subject "[...]"). A signed message gets its protection from
// SignProtected with HPCipher and is then encrypted with Encrypt; given one here, EncryptProtected fails.
func EncryptProtected(msg []byte, certs []*x509.Certificate, opts *cms.EncryptOptions) ([]byte, error) {
	top := parseEntity(msg)
	if mt, _ := top.contentType(); mt == "multipart/signed" {
		return nil, errors.New("smime: header protection of a signed message: use SignProtected, then Encrypt")
	}
	return encrypt(msg, certs, opts, HPCipher)
}

func encrypt(msg []byte, certs []*x509.Certificate, opts *cms.EncryptOptions, hp string) ([]byte, error) {
	top := parseEntity(msg)
	if mt, params := top.contentType(); IsSMIMEType(mt, params) {
		return nil, ErrAlreadyProtected
	}
	outer, entity := splitOuter(msg, hp)
	der, err := cms.Encrypt(entity, certs, opts)
	if err != nil {
		return nil, err
	}
	smimeType := "enveloped-data"
	if opts != nil && opts.Authenticated {
		smimeType = "authEnveloped-data"
	}
	var b bytes.Buffer
	b.Grow(len(outer) + len(der)*4/3 + 512)
	b.Write(outer)
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: application/pkcs7-mime; smime-type=" + smimeType + "; name=smime.p7m\r\n")
	b.WriteString("Content-Disposition: attachment; filename=smime.p7m\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
	writeBase64Lines(&b, der)
	return b.Bytes(), nil
}

// Canonicalize returns a MIME entity (header fields, empty line, body) in the canonical form a signature is
// computed over (RFC 8551 section 3.1): CRLF line ends, and every leaf part whose content is not 7-bit (8BITMIME
// or BINARYMIME transport, RFC 6152, RFC 3030, or SMTPUTF8 text) re-encoded with a 7-bit transfer encoding
// (section 3.1.3: quoted-printable for text, base64 otherwise), its Content-Transfer-Encoding field replaced.
// Multiparts are walked (preamble and epilogue kept), message/rfc822 parts too. A part declared binary keeps
// its bytes exactly (no line-end change) inside the base64.
func Canonicalize(entity []byte) []byte {
	return canonicalize(entity, 0)
}

// maxCanonDepth bounds the MIME nesting Canonicalize descends (deeper entities are only CRLF-normalized).
const maxCanonDepth = 32

func canonicalize(raw []byte, depth int) []byte {
	e := parseEntity(raw)
	mt, params := e.contentType()
	cte := strings.ToLower(strings.TrimSpace(e.get("Content-Transfer-Encoding")))
	header := toCRLFBytes(e.header)
	out := func(h, body []byte) []byte {
		r := make([]byte, 0, len(h)+len(body)+2)
		r = append(r, h...)
		r = append(r, '\r', '\n')
		return append(r, body...)
	}
	if depth >= maxCanonDepth {
		return out(header, toCRLFBytes(e.body))
	}
	switch {
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		return out(header, canonicalMultipart(e.body, params["boundary"], depth))
	case mt == "message/rfc822" && (cte == "" || cte == "7bit" || cte == "8bit" || cte == "binary"):
		inner := canonicalize(e.body, depth+1)
		return out(replaceCTE(header, cte, "7bit", !is7bit(inner)), inner)
	}
	switch cte {
	case "base64", "quoted-printable":
		return out(header, toCRLFBytes(e.body))
	case "binary":
		if is7bit(e.body) && !bytes.Contains(e.body, []byte("\r\n")) && !bytes.Contains(e.body, []byte("\n")) {
			return out(replaceCTE(header, cte, "7bit", false), e.body)
		}
		return out(replaceCTE(header, cte, "base64", true), base64Lines(e.body))
	}
	body := toCRLFBytes(e.body)
	if is7bit(body) && !longLines(body) {
		return out(header, body)
	}
	if strings.HasPrefix(mt, "text/") {
		var b bytes.Buffer
		w := quotedprintable.NewWriter(&b)
		w.Write(body)
		w.Close()
		return out(replaceCTE(header, cte, "quoted-printable", true), toCRLFBytes(b.Bytes()))
	}
	return out(replaceCTE(header, cte, "base64", true), base64Lines(body))
}

// canonicalMultipart canonicalizes each part of a multipart body (RFC 2046 section 5.1.1), keeping the
// delimiter lines, preamble and epilogue (CRLF-normalized).
func canonicalMultipart(body []byte, boundary string, depth int) []byte {
	delim := []byte("--" + boundary)
	var out bytes.Buffer
	out.Grow(len(body) + len(body)/8)
	partStart := -1 // start of the current part's bytes, -1 in the preamble or after the close delimiter
	closed := false
	p := 0
	for p <= len(body) {
		end := bytes.IndexByte(body[p:], '\n')
		lineEnd := len(body)
		if end >= 0 {
			lineEnd = p + end + 1
		}
		line := bytes.TrimRight(body[p:lineEnd], "\r\n")
		if !closed && bytes.HasPrefix(line, delim) {
			rest := bytes.TrimRight(line[len(delim):], " \t")
			isClose := bytes.Equal(rest, []byte("--"))
			if len(rest) == 0 || isClose {
				if partStart >= 0 {
					// The part ends before the line break preceding the delimiter.
					pe := p
					if pe > partStart && body[pe-1] == '\n' {
						pe--
						if pe > partStart && body[pe-1] == '\r' {
							pe--
						}
					}
					out.Write(canonicalize(body[partStart:pe], depth+1))
					out.WriteString("\r\n")
				}
				out.Write(line)
				out.WriteString("\r\n")
				partStart = -1
				if isClose {
					closed = true
				} else {
					partStart = lineEnd
				}
				if end < 0 {
					break
				}
				p = lineEnd
				continue
			}
		}
		if partStart < 0 {
			// Preamble or epilogue.
			out.Write(toCRLFBytes(body[p:lineEnd]))
		}
		if end < 0 {
			break
		}
		p = lineEnd
	}
	if partStart >= 0 && partStart < len(body) {
		// No close delimiter: the last part runs to the end.
		out.Write(canonicalize(body[partStart:], depth+1))
	}
	return out.Bytes()
}

// replaceCTE returns header with its Content-Transfer-Encoding fields removed and, when add is set or the
// entity had one, one saying cte added.
func replaceCTE(header []byte, old, cte string, add bool) []byte {
	var b bytes.Buffer
	eachField(header, func(f field) {
		if !f.is("Content-Transfer-Encoding") {
			b.Write(f.raw)
		}
	})
	if add || old != "" {
		b.WriteString("Content-Transfer-Encoding: " + cte + "\r\n")
	}
	return b.Bytes()
}

// is7bit reports whether b holds only 7-bit data without NUL (RFC 2045 section 2.7, apart from line length).
func is7bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || c == 0 {
			return false
		}
	}
	return true
}

// longLines reports whether a line of b is longer than 998 octets (RFC 5322 section 2.1.1).
func longLines(b []byte) bool {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return len(b) > 998
		}
		if i > 999 {
			return true
		}
		b = b[i+1:]
	}
	return false
}

// toCRLFBytes turns bare LFs (and bare CRs) into CRLF.
func toCRLFBytes(b []byte) []byte {
	bare := false
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') || c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			bare = true
			break
		}
	}
	if !bare {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32+2)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\r' && i+1 < len(b) && b[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case c == '\r' || c == '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

func base64Lines(b []byte) []byte {
	var buf bytes.Buffer
	writeBase64Lines(&buf, b)
	return buf.Bytes()
}

// writeBase64Lines writes b base64-encoded in lines of 76 characters with CRLF (RFC 2045 section 6.8).
func writeBase64Lines(w *bytes.Buffer, b []byte) {
	enc := base64.StdEncoding
	line := make([]byte, 76)
	for len(b) > 0 {
		n := min(len(b), 57)
		enc.Encode(line, b[:n])
		w.Write(line[:enc.EncodedLen(n)])
		w.WriteString("\r\n")
		b = b[n:]
	}
}

// newBoundary returns a multipart boundary that cannot occur in base64 or quoted-printable text ("=_" and
// "." are not base64, "=_" is not a quoted-printable escape; RFC 2046 section 5.1.1).
func newBoundary() (string, error) {
	r := make([]byte, 16)
	if _, err := rand.Read(r); err != nil {
		return "", fmt.Errorf("smime: boundary: %w", err)
	}
	return "----=_smimeproxy." + hex.EncodeToString(r), nil
}
