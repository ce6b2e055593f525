package vaultcfg_test

//lint:file-ignore SA1019 tests build RSA PKCS #1 v1.5 key transport, what most S/MIME senders use (RFC 8551 section 2.3)

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// BenchmarkLookup compares a lookup answered by the cache with one that reads the user's keys from Vault.
func BenchmarkLookup(b *testing.B) {
	v := testenv.StartVault(b)
	ctx := context.Background()
	key := rsaKey(b, 0)
	cert := newCert(b, key, "bench@example.com", time.Now())
	ids := cms.RecipientIDsOf(cert)
	for _, bc := range []struct {
		name string
		ttl  time.Duration
	}{{"cached", time.Hour}, {"vault", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := vaultcfg.Open(ctx, vaultcfg.Config{Addr: v.Addr(), Token: v.RootToken(), CacheTTL: bc.ttl})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Put(ctx, "bench", []*x509.Certificate{cert}, key, keystore.PutOptions{}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if k, err := s.Lookup(ctx, "bench", ids); err != nil || len(k) != 1 {
					b.Fatalf("Lookup() = %v, %v", k, err)
				}
			}
		})
	}
}

// BenchmarkTransitDecrypt compares one transit/decrypt call per ciphertext with batches of 32 (per item).
func BenchmarkTransitDecrypt(b *testing.B) {
	v := testenv.StartVault(b)
	ctx := context.Background()
	key := rsaKey(b, 1)
	cert := newCert(b, key, "bench@example.com", time.Now())
	s, err := vaultcfg.Open(ctx, vaultcfg.Config{Addr: v.Addr(), Token: v.RootToken()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Put(ctx, "bench", []*x509.Certificate{cert}, key, keystore.PutOptions{Transit: true}); err != nil {
		b.Fatal(err)
	}
	keys, err := s.Lookup(ctx, "bench", cms.RecipientIDsOf(cert))
	if err != nil || len(keys) != 1 {
		b.Fatal(keys, err)
	}
	tk := keys[0].Private.(*vaultcfg.TransitKey)
	const batch = 32
	cts := make([][]byte, batch)
	for i := range cts {
		cts[i], _ = rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, make([]byte, 32))
	}
	b.Run("single", func(b *testing.B) {
		for b.Loop() {
			if _, err := tk.Decrypt(rand.Reader, cts[0], &rsa.PKCS1v15DecryptOptions{SessionKeyLen: 32}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("batch32", func(b *testing.B) {
		for b.Loop() {
			res, err := tk.DecryptBatch(ctx, cts, vaultcfg.PaddingPKCS1v15)
			if err != nil || len(res) != batch {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/item")
	})
}
