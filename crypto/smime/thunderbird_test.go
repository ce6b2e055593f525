package smime_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// Under exactly one outer signature layer: decrypted (Thunderbird's rule, bug 1806161).
var oneOuterSignature = regexp.MustCompile(`^alice\.env\.(dsig\.SHA\d+\.multipart|sig\.SHA\d+\.opaque)\.eml$`)

// TestThunderbirdCorpus runs every message of the NSS corpus through Process with Bob's key and checks the
// policy (RFC 8551 section 3, EFAIL rule), the served bytes against `openssl cms -decrypt` of the same
// message, and that inner signatures still verify with `openssl cms -verify` on the served bytes.
func TestThunderbirdCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(corpus, "*.eml"))
	if err != nil || len(files) < 60 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	key := bob(t)
	pem := bobPEM(t)
	dir := t.TempDir()
	var decrypted, passed, verified int
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			msg, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			orig := append([]byte(nil), msg...)
			kr := &ring{keys: []smime.Key{key}}
			res := smime.Process(context.Background(), msg, kr, nil)
			if !bytes.Equal(msg, orig) {
				t.Fatal("Process modified its input")
			}
			topLevel := strings.HasSuffix(name, ".env.eml")
			if !topLevel && !oneOuterSignature.MatchString(name) {
				// Signed only, or the encrypted layer under two signature layers (Dave's): served unchanged.
				if res.Status != smime.NotEncrypted || !bytes.Equal(res.Served, msg) {
					t.Fatalf("Process() = %v %q, want NotEncrypted and the message byte for byte", res.Status, res.Reason)
				}
				if kr.calls != 0 {
					t.Errorf("keyring asked %d times for a message that is not to be decrypted", kr.calls)
				}
				passed++
				return
			}
			if res.Status != smime.Decrypted {
				t.Fatalf("Process() = %v %q, want Decrypted", res.Status, res.Reason)
			}
			decrypted++
			// The expected entity, from openssl.
			var entity []byte
			switch {
			case topLevel:
				entity = run(t, msg, "openssl", "cms", "-decrypt", "-binary", "-inkey", pem)
			case strings.Contains(name, "opaque"):
				// openssl extracts the signed content (-noverify: without checking the signer's certificate).
				p7m := run(t, nil, "openssl", "cms", "-verify", "-noverify", "-binary", "-in", f)
				entity = run(t, p7m, "openssl", "cms", "-decrypt", "-binary", "-inkey", pem)
			default:
				// The corpus's outer multipart/signed signatures do not verify in openssl, so the first
				// part is taken with the standard library's MIME reader instead.
				entity = run(t, firstPartDER(t, msg), "openssl", "cms", "-decrypt", "-binary", "-inform", "DER",
					"-inkey", pem)
			}
			want := statusDecrypted(key, "aes-128-cbc", "no") + outerKept(msg) + crlf(string(entity))
			if string(res.Served) != want {
				t.Fatalf("served:\n%q\nwant:\n%q", head(res.Served), head([]byte(want)))
			}
			if res.Info.ContentCipher != "aes-128-cbc" || res.Info.Authenticated || res.Fingerprint == "" {
				t.Errorf("Info = %+v, Fingerprint %q", res.Info, res.Fingerprint)
			}
			// A signature inside the encryption still verifies on the served message.
			if strings.HasPrefix(name, "alice.dsig.") || strings.Contains(name, ".sig.") && topLevel {
				served := filepath.Join(dir, name)
				if err := os.WriteFile(served, res.Served, 0o600); err != nil {
					t.Fatal(err)
				}
				out := run(t, nil, "openssl", "cms", "-verify", "-noverify", "-in", served)
				if !bytes.Contains(out, []byte("Alice")) && !bytes.Contains(out, []byte("alice")) {
					t.Errorf("verified content %q does not look like Alice's message", head(out))
				}
				verified++
			}
		})
	}
	if decrypted != 21 {
		t.Errorf("decrypted %d corpus messages, want 21 (13 top-level + 8 under one signature)", decrypted)
	}
	if verified != 12 {
		t.Errorf("verified inner signatures of %d served messages, want 12", verified)
	}
	t.Logf("decrypted %d, passed through %d", decrypted, passed)
}

// firstPartDER returns the decoded body of the first part of a multipart message.
func firstPartDER(t *testing.T, msg []byte) []byte {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	part, err := multipart.NewReader(m.Body, params["boundary"]).NextRawPart()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, part))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func head(b []byte) []byte {
	if len(b) > 600 {
		return b[:600]
	}
	return b
}
