package cms

import (
	"bytes"
	"errors"
	"testing"

	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// hostileKARI is a KeyAgreeRecipientInfo (RFC 5652 section 6.2.2) with n RecipientEncryptedKeys, each naming
// a made-up subject key identifier: well-formed enough to be read, useless to decrypt.
func hostileKARI(n int) []byte {
	bits := []byte{0x03, 0x42, 0x00, 0x04} // BIT STRING of an uncompressed P-256 point
	bits = append(bits, make([]byte, 64)...)
	orig := der(tagCtx0C, der(tagCtx1C, algID(oidECPublicKey), bits))
	reks := make([][]byte, n)
	for i := range reks {
		ski := []byte{byte(i >> 8), byte(i), 1, 2, 3, 4, 5, 6}
		reks[i] = der(cbasn1.SEQUENCE, der(tagCtx0C, derOctets(ski)), derOctets(make([]byte, 24)))
	}
	return der(tagCtx1C, derInt(3), orig, algID(kaSchemes[2].oid, algID(oidAES128Wrap)), der(cbasn1.SEQUENCE, reks...))
}

// TestRecipientLimitsAreTotals: the limits on recipients hold for the whole envelope, so many lists of
// keys cannot multiply them (issue 10, item 7: 500 KeyAgreeRecipientInfos x 1024 keys took 588 MB to parse a
// 12 MB message). Parsing such an envelope fails with ErrTooLarge and allocates far less than its size.
func TestRecipientLimitsAreTotals(t *testing.T) {
	cert, key := loadCert(t, "rsa"), loadKey(t, "rsa")
	kari := hostileKARI(maxRecipientKeys)
	many := make([][]byte, 64) // 64 lists of 1024 keys each: every list within the old per-list limit
	for i := range many {
		many[i] = kari
	}
	for _, c := range []struct {
		name  string
		extra [][]byte
		ber   bool
	}{
		{"64-kari-x-1024", many, false},
		{"64-kari-x-1024-ber", many, true},
		// Key transport and key agreement recipients share one budget.
		{"kari-1024-plus-ktri", [][]byte{kari}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := testEncrypt(t, []byte("hello"), encOptions{extraRIs: c.extra, ber: c.ber}, encRecipient{cert: cert})
			var err error
			n := allocated(func() { _, err = Parse(in) })
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Parse() = %v, want ErrTooLarge", err)
			}
			// At most maxRecipientKeys entries of a few hundred bytes are ever held, plus for BER input the
			// DER copy and 4 bytes per constructed element (at least 2 input bytes each).
			limit := uint64(2 << 20)
			if c.ber {
				limit += 2 * uint64(len(in))
			}
			if n > limit {
				t.Errorf("Parse allocated %d bytes for a %d-byte input, want <= %d", n, len(in), limit)
			}
			t.Logf("%d-byte input: %v; allocated %d bytes", len(in), err, n)
		})
	}
	// Up to the limit an envelope still parses and decrypts: 1023 foreign keys and ours.
	in := testEncrypt(t, []byte("hello"), encOptions{extraRIs: [][]byte{hostileKARI(maxRecipientKeys - 1)}}, encRecipient{cert: cert})
	env, err := Parse(in)
	if err != nil {
		t.Fatalf("Parse(1024 keys) = %v", err)
	}
	if n := len(env.Recipients()); n != maxRecipientKeys {
		t.Errorf("%d recipients, want %d", n, maxRecipientKeys)
	}
	pt, _, err := env.Decrypt(cert, key)
	if err != nil || !bytes.Equal(pt, []byte("hello")) {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
}

// TestRecipientInfoCountLimit: more than maxRecipientInfos RecipientInfos of any kind (here skipped
// password RecipientInfos, which hold no key) fail with ErrTooLarge.
func TestRecipientInfoCountLimit(t *testing.T) {
	cert := loadCert(t, "rsa")
	pwri := der(tagCtx3C, derInt(0))
	extra := make([][]byte, maxRecipientInfos)
	for i := range extra {
		extra[i] = pwri
	}
	in := testEncrypt(t, []byte("hello"), encOptions{extraRIs: extra}, encRecipient{cert: cert})
	if _, err := Parse(in); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Parse() = %v, want ErrTooLarge", err)
	}
	if _, err := Parse(testEncrypt(t, []byte("hello"), encOptions{extraRIs: extra[1:]}, encRecipient{cert: cert})); err != nil {
		t.Fatalf("Parse(%d recipient infos) = %v", maxRecipientInfos, err)
	}
}

// TestPeekRecipients: the recipients of an envelope are read from its first bytes alone, DER or BER; a prefix
// that ends inside the RecipientInfos is malformed, not misread, and the recipient limits hold.
func TestPeekRecipients(t *testing.T) {
	rsaCert, p256Cert := loadCert(t, "rsa"), loadCert(t, "p256")
	content := bytes.Repeat([]byte("x"), 100<<10)
	for _, ber := range []bool{false, true} {
		in := testEncrypt(t, content, encOptions{ber: ber}, encRecipient{cert: rsaCert}, encRecipient{cert: p256Cert, ski: true})
		env, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		want := env.Recipients()
		// The RecipientInfos end with the last recipient's encrypted key.
		last := env.recipients[len(env.recipients)-1].encryptedKey
		end := bytes.Index(in, last) + len(last)
		for _, n := range []int{len(in), end + 16, end} {
			got, err := PeekRecipients(in[:n])
			if err != nil {
				t.Fatalf("ber=%v: PeekRecipients(%d of %d bytes) = %v", ber, n, len(in), err)
			}
			if len(got) != len(want) {
				t.Fatalf("ber=%v: %d recipients, want %d", ber, len(got), len(want))
			}
			for i := range got {
				if got[i].Key() != want[i].Key() {
					t.Errorf("ber=%v: recipient %d = %s, want %s", ber, i, got[i], want[i])
				}
			}
		}
		if _, err := PeekRecipients(in[:end-1]); !errors.Is(err, ErrMalformed) {
			t.Errorf("ber=%v: PeekRecipients(cut inside the recipient infos) = %v, want ErrMalformed", ber, err)
		}
	}
	signed := der(cbasn1.SEQUENCE, derOID(OIDSignedData), der(tagCtx0C, der(cbasn1.SEQUENCE, derInt(1))))
	if _, err := PeekRecipients(signed); !errors.Is(err, ErrNotEnveloped) {
		t.Errorf("PeekRecipients(signed-data) = %v, want ErrNotEnveloped", err)
	}
	many := make([][]byte, 4)
	for i := range many {
		many[i] = hostileKARI(maxRecipientKeys)
	}
	in := testEncrypt(t, []byte("x"), encOptions{extraRIs: many}, encRecipient{cert: rsaCert})
	if _, err := PeekRecipients(in); !errors.Is(err, ErrTooLarge) {
		t.Errorf("PeekRecipients(4 x 1024 keys) = %v, want ErrTooLarge", err)
	}
}
