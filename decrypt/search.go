package decrypt

import (
	"bytes"
	"io"
	"mime"
	"strings"

	"golang.org/x/text/encoding/htmlindex"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// maxMIMEDepth bounds recursion into nested multiparts and attached messages.
const maxMIMEDepth = 20

// MatchText reports whether needle occurs, case-insensitively, in the decoded text of served (a message as
// Rewrite returned it): in every text/* part after undoing the content transfer encoding and converting the
// charset (RFC 2045 section 6, RFC 2046 section 4.1.2), recursing into multipart and message/rfc822 parts and
// into the encapsulated entity of opaque signed-data (RFC 8551 section 3.5.2, not verified here); with
// headerToo also in the decoded header fields (RFC 2047). That is SEARCH BODY (headerToo false) and SEARCH TEXT
// (headerToo true) of RFC 9051 section 6.4.4 over the plaintext a client sees. An empty needle matches. The
// message is read with internal/mimepart, the reader that numbers its parts for BODY[section] and decides what
// its header fields are; a text part whose transfer encoding cannot be undone (mimepart.Decode fails) is
// matched as it is stored, as a client reading it with BODY[section] would see it.
func MatchText(served []byte, needle string, headerToo bool) bool {
	n := strings.ToLower(needle)
	if n == "" {
		return true
	}
	return matchPart(mimepart.Parse(served), n, headerToo, 0)
}

// MatchHeader reports whether the top-level header of served (a message as Rewrite returned it) has a field
// called name (case-insensitive, RFC 5322 section 1.2.2) whose value, unfolded (section 2.2.3) and with
// encoded words decoded (RFC 2047), contains needle case-insensitively; an empty needle matches any field of
// that name. That is SEARCH HEADER of RFC 9051 section 6.4.4 over the copy a client sees. The header is read
// with mimepart.EachField, the scanner that also decides what a status field is.
func MatchHeader(served []byte, name, needle string) bool {
	n := strings.ToLower(needle)
	found := false
	mimepart.EachField(served, func(f mimepart.Field) {
		if found || !f.Is(name) || !bytes.Contains(f.Raw, []byte(":")) {
			return
		}
		found = strings.Contains(strings.ToLower(decodeWords(f.Value())), n)
	})
	return found
}

var wordDecoder = &mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
	enc, err := htmlindex.Get(charset)
	if err != nil {
		return nil, err
	}
	return enc.NewDecoder().Reader(r), nil
}}

// decodeWords decodes the encoded words of a header value (RFC 2047); a value that does not decode is kept.
func decodeWords(v string) string {
	if dec, err := wordDecoder.DecodeHeader(v); err == nil {
		return dec
	}
	return v
}

func matchPart(p *mimepart.Part, needle string, headerToo bool, depth int) bool {
	if headerToo {
		found := false
		mimepart.EachField(p.Header, func(f mimepart.Field) {
			found = found || strings.Contains(strings.ToLower(string(f.Name)), needle) ||
				strings.Contains(strings.ToLower(decodeWords(f.Value())), needle)
		})
		if found {
			return true
		}
	}
	if depth >= maxMIMEDepth {
		return false
	}
	switch {
	case p.Multipart:
		for _, c := range p.Parts {
			if matchPart(c, needle, headerToo, depth+1) {
				return true
			}
		}
		return false
	case p.MediaType == "message/rfc822":
		m := p.Message
		if !mimepart.IsIdentity(p.Encoding) {
			b, err := p.Decoded()
			if err != nil {
				return false
			}
			m = mimepart.Parse(b)
		}
		return m != nil && matchPart(m, needle, true, depth+1)
	case isPKCS7Type(p):
		// Opaque signed-data (RFC 8551 section 3.5.2): the signed entity is the eContent, read without
		// verifying (the signature status is the served copy's signature field). Enveloped data stays opaque.
		der, err := p.Decoded()
		if err != nil {
			return false
		}
		inner, err := cms.SignedContent(der)
		if err != nil {
			return false
		}
		return matchPart(mimepart.Parse(inner), needle, headerToo, depth+1)
	case strings.HasPrefix(p.MediaType, "text/"):
		b, err := p.Decoded()
		if err != nil {
			b = p.Body
		}
		return strings.Contains(strings.ToLower(decodeCharset(b, p.Params["charset"])), needle)
	}
	return false
}

// isPKCS7Type reports whether p may hold a CMS object (RFC 8551 section 3.2.1): application/(x-)pkcs7-mime not
// labelled enveloped, or application/octet-stream named smime.p7m.
func isPKCS7Type(p *mimepart.Part) bool {
	switch p.MediaType {
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		st := strings.ToLower(p.Params["smime-type"])
		return st != "enveloped-data" && st != "authenveloped-data" && st != "certs-only"
	case "application/octet-stream":
		return strings.EqualFold(p.Params["name"], "smime.p7m") || strings.EqualFold(p.Filename(), "smime.p7m")
	}
	return false
}

// decodeCharset converts b from charset to UTF-8; unknown charsets and undecodable bytes are kept as they are.
func decodeCharset(b []byte, charset string) string {
	cs := strings.ToLower(strings.TrimSpace(charset))
	if cs == "" || cs == "utf-8" || cs == "us-ascii" || isASCII(b) {
		return string(b)
	}
	enc, err := htmlindex.Get(cs)
	if err != nil {
		return string(b)
	}
	out, err := enc.NewDecoder().Bytes(b)
	if err != nil {
		return string(b)
	}
	return string(out)
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
