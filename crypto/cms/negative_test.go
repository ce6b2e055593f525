package cms

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"math/big"
	"path/filepath"
	"testing"

	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

func fixture(t testing.TB, name string) []byte {
	return readFile(t, filepath.Join(fixturesDir, name+".der"))
}

// decryptAs parses in and decrypts it as the named test key.
func decryptAs(t testing.TB, in []byte, who string) ([]byte, Info, error) {
	env, err := Parse(in)
	if err != nil {
		return nil, Info{}, err
	}
	return env.Decrypt(loadCert(t, who), loadKey(t, who))
}

func TestNotForUs(t *testing.T) {
	if _, _, err := decryptAs(t, fixture(t, "only-rsa2"), "rsa"); !errors.Is(err, ErrNoRecipient) {
		t.Errorf("Decrypt() = %v, want ErrNoRecipient", err)
	}
	if _, _, err := decryptAs(t, fixture(t, "rsa-v15-aes128-cbc"), "p256"); !errors.Is(err, ErrNoRecipient) {
		t.Errorf("Decrypt() = %v, want ErrNoRecipient", err)
	}
	env, err := Parse(fixture(t, "rsa-v15-aes128-cbc"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := env.Decrypt(nil, loadKey(t, "rsa")); !errors.Is(err, ErrNoRecipient) {
		t.Errorf("Decrypt(nil cert) = %v, want ErrNoRecipient", err)
	}
	// The right certificate with a key of the wrong kind is a caller error, reported as such.
	if _, _, err := env.Decrypt(loadCert(t, "rsa"), loadKey(t, "p256")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Decrypt(rsa cert, ec key) = %v, want ErrUnsupported", err)
	}
	env, _ = Parse(fixture(t, "ecdh-p256-sha256-aes128wrap-aes128-cbc"))
	if _, _, err := env.Decrypt(loadCert(t, "p256"), loadKey(t, "rsa")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Decrypt(ec cert, rsa key) = %v, want ErrUnsupported", err)
	}
}

// flip returns a copy of in with the bit mask flipped at offset off.
func flip(in []byte, off int, mask byte) []byte {
	out := bytes.Clone(in)
	out[off] ^= mask
	return out
}

// TestTampering: flipped bits in the encrypted key, the content, the GCM tag or the authenticated attributes
// all end in the one vague ErrDecryption (RFC 5652 section 6.3; RFC 5083 section 2.2).
func TestTampering(t *testing.T) {
	msg := bytes.Repeat([]byte("tamper test "), 50)
	for _, c := range []struct {
		name string
		who  string
		r    encRecipient
		o    encOptions
	}{
		{"rsa-v15-cbc", "rsa", encRecipient{}, encOptions{content: oidAES256CBC}},
		{"rsa-oaep-gcm", "rsa", encRecipient{oaep: &rsa.OAEPOptions{Hash: crypto.SHA256}}, encOptions{content: oidAES128GCM, authAttrs: true}},
		{"p256-gcm", "p256", encRecipient{}, encOptions{content: oidAES256GCM, authAttrs: true}},
		{"x25519-chacha", "x25519", encRecipient{}, encOptions{content: oidChaCha20, authAttrs: true}},
		{"x448-cbc", "x448", encRecipient{}, encOptions{content: oidAES128CBC}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.r
			r.cert = loadCert(t, c.who)
			in := testEncrypt(t, msg, c.o, r)
			env, err := Parse(in)
			if err != nil {
				t.Fatal(err)
			}
			ri := env.recipients[0]
			ct := env.encrypted
			offs := map[string]int{
				"encrypted key":           offsetOf(t, in, ri.encryptedKey) + len(ri.encryptedKey)/2,
				"content last byte":       offsetOf(t, in, ct) + len(ct) - 1,
				"content first byte":      offsetOf(t, in, ct),
				"content penultimate blk": offsetOf(t, in, ct) + len(ct) - 17,
			}
			if env.auth {
				offs["mac"] = bytes.LastIndex(in, env.mac) + 3
				if env.authAttrs != nil {
					offs["auth attrs"] = bytes.Index(in, env.authAttrs) + len(env.authAttrs) - 1
				}
			} else {
				delete(offs, "content first byte") // CBC has no integrity: an early flip only garbles a block
			}
			for what, off := range offs {
				for _, mask := range []byte{0x80, 0x01} {
					out, _, err := decryptAs(t, flip(in, off, mask), c.who)
					// CBC without integrity: a garbled last block (a flipped content byte there, or a wrong
					// key from RSA's implicit rejection) still ends in valid padding about once in 256 tries.
					// Then the output is garbage, never the message; every other failure is ErrDecryption.
					// A flip in the next-to-last block always breaks the padding.
					garbled := !env.auth && err == nil && !bytes.Equal(out, msg) && what != "content penultimate blk"
					if err != ErrDecryption && !garbled {
						t.Errorf("flip %#x in %s: Decrypt() = %v, want exactly ErrDecryption", mask, what, err)
					}
				}
			}
		})
	}
}

func offsetOf(t *testing.T, in, sub []byte) int {
	t.Helper()
	i := bytes.Index(in, sub)
	if i < 0 {
		t.Fatal("field not found in encoding")
	}
	return i
}

// TestPKCS1v15NoOracle: a key-transport block with bad PKCS #1 v1.5 padding gives exactly the same error as a
// wrong content padding, a wrong GCM tag or a wrong-length key (rsa.PKCS1v15DecryptOptions.SessionKeyLen).
func TestPKCS1v15NoOracle(t *testing.T) {
	cert := loadCert(t, "rsa")
	pub := cert.PublicKey.(*rsa.PublicKey)
	msg := []byte("oracle test")
	rawRSA := func(m []byte) []byte { // textbook RSA of m, so the padding is whatever m holds
		c := new(big.Int).Exp(new(big.Int).SetBytes(m), big.NewInt(int64(pub.E)), pub.N)
		return c.FillBytes(make([]byte, pub.Size()))
	}
	k := pub.Size()
	badBlocks := map[string][]byte{}
	noZero := make([]byte, k) // 00 02 <random nonzero> but no 00 separator
	noZero[1] = 2
	for i := 2; i < k; i++ {
		noZero[i] = 0x5a
	}
	badBlocks["no separator"] = noZero
	wrongType := bytes.Clone(noZero)
	wrongType[1] = 1
	wrongType[k-17] = 0
	badBlocks["block type 1"] = wrongType
	shortKey := bytes.Clone(noZero)
	shortKey[k-9] = 0 // well-formed padding, 8-byte key where 32 are needed
	badBlocks["short key"] = shortKey
	random := make([]byte, k-1)
	rand.Read(random)
	badBlocks["random"] = append([]byte{0}, random...)

	for _, gcm := range []bool{false, true} {
		o := encOptions{content: oidAES256CBC}
		if gcm {
			o.content = oidAES256GCM
		}
		in := testEncrypt(t, msg, o, encRecipient{cert: cert})
		env, _ := Parse(in)
		ek := env.recipients[0].encryptedKey
		for name, block := range badBlocks {
			forged := bytes.Replace(in, ek, rawRSA(block), 1)
			pt, _, err := decryptAs(t, forged, "rsa")
			if err == nil && !gcm && !bytes.Equal(pt, msg) {
				// CBC has no integrity: the substitute key of implicit rejection decrypts to garbage whose
				// last byte is a valid padding about once in 256 tries. That is the same outcome as any
				// wrong key, not an oracle.
				continue
			}
			if err != ErrDecryption || err.Error() != ErrDecryption.Error() {
				t.Errorf("gcm=%v %s: Decrypt() = %v, want exactly ErrDecryption", gcm, name, err)
			}
		}
	}
}

// TestTruncation: every prefix of a DER and of a BER fixture fails with ErrMalformed, never a panic.
func TestTruncation(t *testing.T) {
	for _, name := range []string{"rsa-v15-aes128-cbc", "rsa-v15-aes128-cbc-stream-small", "ecdh-p256-sha256-aes256wrap-aes256-gcm", "multi-keyid-stream-aes128-gcm"} {
		in := fixture(t, name)
		step := 1
		if len(in) > 4000 {
			step = 7
		}
		for n := 0; n < len(in); n += step {
			if _, err := Parse(in[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: Parse(first %d of %d bytes) = %v, want ErrMalformed", name, n, len(in), err)
			}
		}
	}
}

func TestWrongContentType(t *testing.T) {
	data := der(0x30|0x20, derOID(OIDData), der(tagCtx0C, derOctets([]byte("hello"))))
	if _, err := Parse(data); !errors.Is(err, ErrNotEnveloped) {
		t.Errorf("Parse(data) = %v, want ErrNotEnveloped", err)
	}
	if _, err := SignedContent(data); !errors.Is(err, ErrNotSigned) {
		t.Errorf("SignedContent(data) = %v, want ErrNotSigned", err)
	}
	if _, err := Parse(fixture(t, "signed-p256")); !errors.Is(err, ErrNotEnveloped) {
		t.Errorf("Parse(signed) = %v, want ErrNotEnveloped", err)
	}
}

// TestHostileStructure: the documented limits hold and fail with the documented errors.
func TestHostileStructure(t *testing.T) {
	deep := []byte{}
	for i := 0; i < MaxDepth+5; i++ {
		deep = append([]byte{0x30, 0x80}, deep...)
		deep = append(deep, 0, 0)
	}
	if _, err := Parse(deep); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Parse(deep) = %v, want ErrTooLarge", err)
	}
	cases := map[string][]byte{
		"length overruns":    {0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x00},
		"5-byte length":      {0x30, 0x85, 1, 0, 0, 0, 0},
		"indefinite prim":    {0x04, 0x80, 0, 0},
		"no end-of-contents": {0x30, 0x80, 0x02, 0x01, 0x00},
		"trailing garbage":   {0x30, 0x00, 0x01},
		"empty":              {},
		"reserved length":    {0x30, 0xff},
		"bad segment":        {0x24, 0x80, 0x02, 0x01, 0x00, 0, 0},
	}
	for name, in := range cases {
		if _, err := Parse(in); err == nil || !(errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge)) {
			t.Errorf("%s: Parse() = %v, want ErrMalformed or ErrTooLarge", name, err)
		}
	}
}

// TestTamperingStreamed: a flipped bit in the content of a streamed (BER) AuthEnvelopedData, which is
// decrypted in place, fails with ErrDecryption, and the spent Envelope refuses a second attempt.
func TestTamperingStreamed(t *testing.T) {
	in := fixture(t, "rsa-v15-aes256-gcm-stream")
	bad := flip(in, len(in)/2, 0x10)
	env, err := Parse(bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := env.Decrypt(loadCert(t, "rsa"), loadKey(t, "rsa")); err != ErrDecryption {
		t.Errorf("Decrypt(tampered) = %v, want ErrDecryption", err)
	}
	if _, _, err := env.Decrypt(loadCert(t, "rsa"), loadKey(t, "rsa")); !errors.Is(err, ErrDecryption) {
		t.Errorf("second Decrypt() = %v, want ErrDecryption", err)
	}
	// The untouched input still decrypts (Parse copied it while rewriting BER).
	if _, _, err := decryptAs(t, in, "rsa"); err != nil {
		t.Errorf("Decrypt(original) = %v", err)
	}
}

// TestOtherRecipientInfoKinds: KEKRecipientInfo, PasswordRecipientInfo and OtherRecipientInfo are skipped
// (RFC 5652 section 6.2.3-6.2.5); the key transport recipient after them still works, and a message with
// only those kinds has no recipient for a certificate.
func TestOtherRecipientInfoKinds(t *testing.T) {
	kekri := der(tagCtx2C, derInt(4), der(cbasn1.SEQUENCE, derOctets([]byte("kek id"))), algID(oidAES128Wrap), derOctets(make([]byte, 24)))
	pwri := der(tagCtx3C, derInt(0), algID(oidAES128Wrap), derOctets(make([]byte, 24)))
	ori := der(tagCtx4C, derOID(asn1.ObjectIdentifier{1, 2, 3}), derInt(1))
	msg := []byte("skip the others")
	cert := loadCert(t, "rsa")
	in := testEncrypt(t, msg, encOptions{extraRIs: [][]byte{kekri, pwri, ori}}, encRecipient{cert: cert})
	env, err := Parse(in)
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if n := len(env.Recipients()); n != 1 {
		t.Errorf("len(Recipients()) = %d, want 1", n)
	}
	if pt, _, err := env.Decrypt(cert, loadKey(t, "rsa")); err != nil || !bytes.Equal(pt, msg) {
		t.Errorf("Decrypt() = %q, %v", pt, err)
	}
	in = testEncrypt(t, msg, encOptions{extraRIs: [][]byte{kekri, pwri, ori}})
	if _, _, err := decryptAs(t, in, "rsa"); !errors.Is(err, ErrNoRecipient) {
		t.Errorf("Decrypt(only other kinds) = %v, want ErrNoRecipient", err)
	}
}

// TestSegmentedContentInDER: a definite-length encoding whose [0] IMPLICIT encryptedContent is constructed
// (X.690 section 8.7.3) is DER as far as the rewrite is concerned; Parse joins the segments into a copy and
// leaves the input alone, ParseOwned joins them in place.
func TestSegmentedContentInDER(t *testing.T) {
	msg := bytes.Repeat([]byte("segmented "), 1000)
	cert, key := loadCert(t, "p256"), loadKey(t, "p256")
	for _, content := range []asn1.ObjectIdentifier{oidAES128CBC, oidAES256GCM} {
		ber := testEncrypt(t, msg, encOptions{content: content, ber: true, chunk: 999}, encRecipient{cert: cert})
		definite, copied, err := toDER(ber)
		if err != nil || !copied {
			t.Fatalf("toDER() = %v, copied=%v", err, copied)
		}
		if _, again, _ := toDER(definite); again {
			t.Fatal("toDER output is not accepted as DER")
		}
		orig := bytes.Clone(definite)
		env, err := Parse(definite)
		if err != nil {
			t.Fatal(err)
		}
		if pt, _, err := env.Decrypt(cert, key); err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("Parse+Decrypt: %v", err)
		}
		if !bytes.Equal(definite, orig) {
			t.Error("Parse+Decrypt modified the caller's buffer")
		}
		env, err = ParseOwned(definite)
		if err != nil {
			t.Fatal(err)
		}
		if pt, _, err := env.Decrypt(cert, key); err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("ParseOwned+Decrypt: %v", err)
		}
	}
}

// TestParseOwnedKeepsOtherTypes: ParseOwned leaves a signed-data buffer intact, so SignedContent can follow.
func TestParseOwnedKeepsOtherTypes(t *testing.T) {
	buf := fixture(t, "signed-p256")
	orig := bytes.Clone(buf)
	if _, err := ParseOwned(buf); !errors.Is(err, ErrNotEnveloped) {
		t.Fatalf("ParseOwned(signed) = %v, want ErrNotEnveloped", err)
	}
	if !bytes.Equal(buf, orig) {
		t.Fatal("ParseOwned modified a signed-data buffer")
	}
	if _, err := SignedContent(buf); err != nil {
		t.Errorf("SignedContent() after ParseOwned = %v", err)
	}
}
