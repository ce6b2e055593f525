package vaultcfg

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKWPVectors checks the two examples of RFC 5649 section 6.
func TestKWPVectors(t *testing.T) {
	kek := "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"
	for _, tc := range []struct{ name, key, wrapped string }{
		{"20 octets", "c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"7 octets", "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wrapKWP(unhex(t, kek), unhex(t, tc.key))
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != tc.wrapped {
				t.Errorf("wrapKWP() = %x, want %s", got, tc.wrapped)
			}
			back, err := unwrapKWP(unhex(t, kek), got)
			if err != nil || !bytes.Equal(back, unhex(t, tc.key)) {
				t.Errorf("unwrapKWP() = %x, %v, want %s", back, err, tc.key)
			}
		})
	}
}

func TestKWPRejects(t *testing.T) {
	kek := make([]byte, 32)
	if _, err := wrapKWP(kek, nil); err == nil {
		t.Error("wrapKWP(empty) succeeded")
	}
	if _, err := wrapKWP(kek[:5], []byte("x")); err == nil {
		t.Error("wrapKWP(5-byte kek) succeeded")
	}
	for _, n := range []int{1, 8, 9, 100} {
		p := make([]byte, n)
		rand.Read(p)
		w, err := wrapKWP(kek, p)
		if err != nil {
			t.Fatal(err)
		}
		for i := range w {
			bad := bytes.Clone(w)
			bad[i] ^= 1
			if _, err := unwrapKWP(kek, bad); err == nil {
				t.Fatalf("unwrapKWP accepted a flipped bit at %d of %d-byte wrap", i, n)
			}
		}
		if _, err := unwrapKWP(kek, w[:len(w)-8]); err == nil {
			t.Errorf("unwrapKWP accepted a truncated %d-byte wrap", n)
		}
		if _, err := unwrapKWP(kek[:16], w); err == nil {
			t.Errorf("unwrapKWP accepted a wrong kek")
		}
	}
}

// TestKWPAgainstOpenSSL wraps with openssl's id-aes256-wrap-pad (the command the Vault documentation gives for
// BYOK) and compares.
func TestKWPAgainstOpenSSL(t *testing.T) {
	dir := t.TempDir()
	kek := make([]byte, 32)
	rand.Read(kek)
	for _, n := range []int{5, 8, 1217} {
		p := make([]byte, n)
		rand.Read(p)
		in := filepath.Join(dir, "in")
		if err := os.WriteFile(in, p, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(testenv.LookPath(t, "openssl"), "enc", "-id-aes256-wrap-pad", "-K", hex.EncodeToString(kek), "-iv", "A65959A6", "-in", in).Output()
		if err != nil {
			t.Fatalf("openssl enc -id-aes256-wrap-pad: %v", err)
		}
		got, err := wrapKWP(kek, p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, out) {
			t.Errorf("wrapKWP(%d bytes) = %x, openssl = %x", n, got, out)
		}
	}
}

func FuzzKWP(f *testing.F) {
	f.Add([]byte("a"), []byte{})
	f.Add(bytes.Repeat([]byte{7}, 33), bytes.Repeat([]byte{1}, 24))
	f.Fuzz(func(t *testing.T, p, junk []byte) {
		kek := make([]byte, 32)
		if len(p) == 0 {
			return
		}
		w, err := wrapKWP(kek, p)
		if err != nil {
			t.Fatal(err)
		}
		back, err := unwrapKWP(kek, w)
		if err != nil || !bytes.Equal(back, p) {
			t.Fatalf("round trip: %x, %v", back, err)
		}
		unwrapKWP(kek, junk) // must not panic
	})
}
