package decrypt

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"

	"golang.org/x/text/encoding/htmlindex"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// maxMIMEDepth bounds recursion into nested multiparts and attached messages.
const maxMIMEDepth = 20

// MatchText reports whether needle occurs, case-insensitively, in the decoded text of served (a message as
// Rewrite returned it): in every text/* part after undoing the content transfer encoding and converting the
// charset (RFC 2045 section 6, RFC 2046 section 4.1.2), recursing into multipart and message/rfc822 parts and
// into the encapsulated entity of opaque signed-data (RFC 8551 section 3.5.2, not verified here); with
// headerToo also in the decoded header fields (RFC 2047). That is SEARCH BODY (headerToo false) and SEARCH TEXT
// (headerToo true) of RFC 9051 section 6.4.4 over the plaintext a client sees. An empty needle matches. A
// message that does not parse is matched as raw bytes.
func MatchText(served []byte, needle string, headerToo bool) bool {
	n := strings.ToLower(needle)
	if n == "" {
		return true
	}
	msg, err := mail.ReadMessage(bytes.NewReader(served))
	if err != nil {
		return strings.Contains(strings.ToLower(string(served)), n)
	}
	return matchEntity(textproto.MIMEHeader(msg.Header), msg.Body, n, headerToo, 0)
}

// MatchHeader reports whether the top-level header of served (a message as Rewrite returned it) has a field
// called name (case-insensitive, RFC 5322 section 1.2.2) whose value, unfolded (section 2.2.3) and with
// encoded words decoded (RFC 2047), contains needle case-insensitively; an empty needle matches any field of
// that name. That is SEARCH HEADER of RFC 9051 section 6.4.4 over the copy a client sees. The header is read
// with smime.EachHeaderField, the scanner that decides what a status field is.
func MatchHeader(served []byte, name, needle string) bool {
	n := strings.ToLower(needle)
	found := false
	smime.EachHeaderField(served, func(fname, raw []byte) {
		if found || !strings.EqualFold(string(fname), name) {
			return
		}
		_, v, ok := bytes.Cut(raw, []byte(":"))
		if !ok {
			return
		}
		val := strings.TrimSpace(strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v)))
		if dec, err := wordDecoder.DecodeHeader(val); err == nil {
			val = dec
		}
		found = strings.Contains(strings.ToLower(val), n)
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

func matchEntity(h textproto.MIMEHeader, body io.Reader, needle string, headerToo bool, depth int) bool {
	if headerToo {
		for name, values := range h {
			if strings.Contains(strings.ToLower(name), needle) {
				return true
			}
			for _, v := range values {
				if dec, err := wordDecoder.DecodeHeader(v); err == nil {
					v = dec
				}
				if strings.Contains(strings.ToLower(v), needle) {
					return true
				}
			}
		}
	}
	if depth >= maxMIMEDepth {
		return false
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		mt, params = "text/plain", nil // RFC 2045 section 5.2 default
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		if params["boundary"] == "" {
			return false
		}
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err != nil {
				return false
			}
			if matchEntity(p.Header, p, needle, headerToo, depth+1) {
				return true
			}
		}
	case mt == "message/rfc822":
		msg, err := mail.ReadMessage(bufio.NewReader(decodeTransfer(h, body)))
		if err != nil {
			return false
		}
		return matchEntity(textproto.MIMEHeader(msg.Header), msg.Body, needle, true, depth+1)
	case isPKCS7Type(mt, params, h):
		// Opaque signed-data (RFC 8551 section 3.5.2): the signed entity is the eContent, read without
		// verifying (the signature status is the served copy's signature field). Enveloped data stays opaque.
		der, err := io.ReadAll(decodeTransfer(h, body))
		if err != nil && len(der) == 0 {
			return false
		}
		inner, err := cms.SignedContent(der)
		if err != nil {
			return false
		}
		msg, err := mail.ReadMessage(bytes.NewReader(inner))
		if err != nil {
			return false
		}
		return matchEntity(textproto.MIMEHeader(msg.Header), msg.Body, needle, headerToo, depth+1)
	case strings.HasPrefix(mt, "text/"):
		b, err := io.ReadAll(decodeTransfer(h, body))
		if err != nil && len(b) == 0 {
			return false
		}
		return strings.Contains(strings.ToLower(decodeCharset(b, params["charset"])), needle)
	}
	return false
}

// isPKCS7Type reports whether an entity of media type mt may hold a CMS object (RFC 8551 section 3.2.1):
// application/(x-)pkcs7-mime not labelled enveloped, or application/octet-stream named smime.p7m.
func isPKCS7Type(mt string, params map[string]string, h textproto.MIMEHeader) bool {
	switch mt {
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		st := strings.ToLower(params["smime-type"])
		return st != "enveloped-data" && st != "authenveloped-data" && st != "certs-only"
	case "application/octet-stream":
		if strings.EqualFold(params["name"], "smime.p7m") {
			return true
		}
		_, dp, err := mime.ParseMediaType(h.Get("Content-Disposition"))
		return err == nil && strings.EqualFold(dp["filename"], "smime.p7m")
	}
	return false
}

// decodeTransfer undoes Content-Transfer-Encoding (RFC 2045 section 6); unknown encodings pass through.
func decodeTransfer(h textproto.MIMEHeader, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &stripSpace{r: r})
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return r
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

// stripSpace drops CR, LF, space and tab, which base64 bodies carry between lines.
type stripSpace struct{ r io.Reader }

func (s *stripSpace) Read(p []byte) (int, error) {
	for {
		n, err := s.r.Read(p)
		j := 0
		for _, c := range p[:n] {
			if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}
