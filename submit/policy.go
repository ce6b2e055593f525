package submit

import (
	"bytes"
	"fmt"
	"net/mail"
	"strings"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// Encryption policies (Policy.Encrypt).
const (
	EncryptNever      = "never"
	EncryptIfPossible = "if-possible" // every recipient has a certificate: encrypt; otherwise signed only
	EncryptAlways     = "always"      // a recipient without a certificate: refuse with 550 5.7.1
)

// Signing policies (Policy.Sign).
const (
	SignAlways = "always" // no signing key for the sender: refuse with 550 5.7.1
	SignNever  = "never"
)

// PolicyHeader is the header field a client without S/MIME buttons can set to override the policy for one
// message: a comma-separated list of "encrypt", "noencrypt", "sign", "nosign". It is removed before sending
// (like every X-Smimeproxy-* field).
const PolicyHeader = "X-Smimeproxy-Send"

// Policy is what the proxy does to outgoing mail; per message, Tags and PolicyHeader override it.
type Policy struct {
	// Sign is SignAlways (default when empty) or SignNever.
	Sign string
	// Encrypt is EncryptNever, EncryptIfPossible (default when empty) or EncryptAlways.
	Encrypt string
	// Tags are the subject tags, matched case-insensitively anywhere in the Subject and removed with the space
	// after them; the zero value means DefaultTags.
	Tags Tags
}

// Tags are the subject tags of a Policy. Encrypt makes the message EncryptAlways, Sign and NoSign turn signing
// on and off. An empty tag is not recognised.
type Tags struct{ Encrypt, Sign, NoSign string }

// DefaultTags are the tags of a Policy that sets none.
var DefaultTags = Tags{Encrypt: "[encrypt]", Sign: "[sign]", NoSign: "[nosign]"}

// Check validates p's values.
func (p Policy) Check() error {
	switch p.Sign {
	case "", SignAlways, SignNever:
	default:
		return fmt.Errorf("submit: sign policy %q: want %s or %s", p.Sign, SignAlways, SignNever)
	}
	switch p.Encrypt {
	case "", EncryptNever, EncryptIfPossible, EncryptAlways:
	default:
		return fmt.Errorf("submit: encrypt policy %q: want %s, %s or %s", p.Encrypt, EncryptNever, EncryptIfPossible, EncryptAlways)
	}
	return nil
}

func (p Policy) withDefaults() Policy {
	if p.Sign == "" {
		p.Sign = SignAlways
	}
	if p.Encrypt == "" {
		p.Encrypt = EncryptIfPossible
	}
	if p.Tags == (Tags{}) {
		p.Tags = DefaultTags
	}
	return p
}

// decision is the policy for one message after its overrides.
type decision struct {
	sign    bool
	encrypt string // EncryptNever, EncryptIfPossible or EncryptAlways
}

// prepared is a message with the overrides read and removed.
type prepared struct {
	msg     []byte   // the message to sign/encrypt: Bcc, PolicyHeader and X-Smimeproxy-* fields removed, tags cut
	visible []string // normalized addresses of To, Cc, Resent-To, Resent-Cc
	from    string   // the From address, normalized ("" when absent or unparsable)
	d       decision
}

// prepare reads the overrides of msg (subject tags, PolicyHeader) on top of p, removes them, the Bcc field and
// every X-Smimeproxy-* field, and collects the visible recipient addresses.
func prepare(msg []byte, p Policy) prepared {
	out := prepared{d: decision{sign: p.Sign == SignAlways, encrypt: p.Encrypt}}
	var hdr bytes.Buffer
	fieldsEnd := 0 // fields are contiguous from 0
	mimepart.EachField(msg, func(f mimepart.Field) {
		raw := f.Raw
		fieldsEnd += len(raw)
		n := string(f.Name)
		value := f.Value
		switch {
		case strings.EqualFold(n, "Bcc"), strings.EqualFold(n, "Resent-Bcc"):
			return
		case strings.EqualFold(n, PolicyHeader):
			for _, w := range strings.Split(value(), ",") {
				switch strings.ToLower(strings.TrimSpace(w)) {
				case "encrypt":
					out.d.encrypt = EncryptAlways
				case "noencrypt":
					out.d.encrypt = EncryptNever
				case "sign":
					out.d.sign = true
				case "nosign":
					out.d.sign = false
				}
			}
			return
		case smime.IsStatusField(raw):
			return
		case strings.EqualFold(n, "Subject"):
			raw = cutTags(raw, p.Tags, &out.d)
		case strings.EqualFold(n, "To"), strings.EqualFold(n, "Cc"), strings.EqualFold(n, "Resent-To"), strings.EqualFold(n, "Resent-Cc"):
			out.visible = append(out.visible, addresses(value())...)
		case strings.EqualFold(n, "From"):
			if a := addresses(value()); len(a) > 0 {
				out.from = a[0]
			}
		}
		hdr.Write(raw)
	})
	// The empty line that ended the header, then the body as it was.
	hdr.Write(msg[fieldsEnd:])
	out.msg = hdr.Bytes()
	return out
}

// cutTags removes the subject tags from a raw Subject field and applies them to d. Tags are matched in the
// field's raw text (an encoded-word subject keeps its tags only when they are outside the encoding, as
// clients write them when the user types them in front).
func cutTags(raw []byte, t Tags, d *decision) []byte {
	s := string(raw)
	for _, tag := range []struct {
		text  string
		apply func()
	}{
		{t.Encrypt, func() { d.encrypt = EncryptAlways }},
		{t.NoSign, func() { d.sign = false }},
		{t.Sign, func() { d.sign = true }},
	} {
		if tag.text == "" {
			continue
		}
		for {
			i := strings.Index(strings.ToLower(s), strings.ToLower(tag.text))
			if i < 0 {
				break
			}
			j := i + len(tag.text)
			for j < len(s) && s[j] == ' ' {
				j++
			}
			s = s[:i] + s[j:]
			tag.apply()
		}
	}
	// "Subject: [encrypt] Hi" became "Subject: Hi"; "Subject: Hi [encrypt]" ends in a space before CRLF.
	s = strings.Replace(s, " \r\n", "\r\n", 1)
	return []byte(s)
}

// addresses returns the normalized addresses of an address-list field value (RFC 5322 section 3.4), or none
// when it does not parse.
func addresses(v string) []string {
	list, err := mail.ParseAddressList(v)
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range list {
		if n, err := keystore.NormalizeAddress(a.Address); err == nil {
			out = append(out, n)
		}
	}
	return out
}
