package cms

import (
	"bytes"
	"runtime"
	"testing"
)

// allocated returns the bytes allocated while running f.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestMemory50MB: decrypting a 50 MB message allocates at most one message-sized buffer (the BER to DER copy,
// then decrypted in place, or the plaintext for DER input), and close to nothing with ParseOwned on DER input.
// With the input itself that keeps the cms part of the pipeline at about 2x the message size.
func TestMemory50MB(t *testing.T) {
	const size = 50 << 20
	msg := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"), size/64)
	cert, key := loadCert(t, "rsa"), loadKey(t, "rsa")
	for _, c := range []struct {
		name    string
		o       encOptions
		owned   bool
		maxFrac float64 // allowed allocation as a fraction of the input size
	}{
		{"cbc-ber", encOptions{content: oidAES256CBC, ber: true}, false, 1.02},
		{"gcm-ber", encOptions{content: oidAES256GCM, ber: true}, false, 1.02},
		{"cbc-der", encOptions{content: oidAES256CBC}, false, 1.02},
		{"gcm-der", encOptions{content: oidAES256GCM}, false, 1.02},
		{"cbc-der-owned", encOptions{content: oidAES256CBC}, true, 0.02},
		{"gcm-der-owned", encOptions{content: oidAES256GCM}, true, 0.02},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := testEncrypt(t, msg, c.o, encRecipient{cert: cert})
			var pt []byte
			var err error
			n := allocated(func() {
				var env *Envelope
				if c.owned {
					env, err = ParseOwned(in)
				} else {
					env, err = Parse(in)
				}
				if err == nil {
					pt, _, err = env.Decrypt(cert, key)
				}
			})
			if err != nil {
				t.Fatalf("decrypt: %v", err)
			}
			if !bytes.Equal(pt, msg) {
				t.Fatal("plaintext differs")
			}
			if limit := uint64(c.maxFrac * float64(len(in))); n > limit {
				t.Errorf("allocated %d bytes for a %d-byte message, want <= %d", n, len(in), limit)
			}
			t.Logf("allocated %.3f x input", float64(n)/float64(len(in)))
		})
	}
}
