package decrypt

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/keystore"
)

const thunderbirdDir = "../testdata/thunderbird"

// putP12 stores the key and certificate of a Thunderbird PKCS#12 file (password nss, written by NSS in BER)
// for user.
func putP12(t *testing.T, store keystore.Store, user, file string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(thunderbirdDir, file))
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := keystore.ParseKeyFile(data, []byte("nss"))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if _, err := store.Put(context.Background(), user, chain[:1], key, keystore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestThunderbirdCorpus runs every NSS-made message of the corpus through Candidate (on the BODYSTRUCTURE a
// server computes) and Rewrite for Bob (the recipient) and for Alice (not a recipient).
func TestThunderbirdCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(thunderbirdDir, "*.eml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	store := keystore.NewMemory()
	putP12(t, store, "bob", "Bob.p12")
	putP12(t, store, "alice", "Alice.p12")
	d, err := New(Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	var decrypted int
	for i, path := range files {
		name := filepath.Base(path)
		msg, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		encrypted := strings.Contains(name, ".env")
		// Thunderbird's rule (research notes, EFAIL): an envelope is decrypted at the top level or under exactly
		// one signature layer; under two (…dave.sig/dsig…) it is not.
		wantDecrypted := encrypted && !(strings.HasPrefix(name, "alice.env.") && strings.Contains(name, ".dave."))
		bs := imapserver.ExtractBodyStructure(bytes.NewReader(msg))
		if cand := d.Candidate(bs); encrypted && wantDecrypted && !cand {
			t.Errorf("%s: Candidate = false for an encrypted message", name)
		}
		raw := func() ([]byte, error) { return msg, nil }
		served, err := d.Rewrite(context.Background(), MessageRef{User: "bob", Mailbox: "INBOX", UIDValidity: 1, UID: uint32(i + 1)}, raw)
		if err != nil {
			t.Fatalf("%s: Rewrite: %v", name, err)
		}
		st := statusOf(served)
		switch {
		case wantDecrypted:
			if st != "decrypted" {
				t.Errorf("%s: bob: status %q, want decrypted (%s)", name, st, mimepart.Values(served, StatusField))
				continue
			}
			decrypted++
			if bytes.Contains(served, []byte("MIAGCSqGSIb3DQEHA6CA")) {
				t.Errorf("%s: bob: served still holds the envelope", name)
			}
			if name == "alice.env.eml" && !bytes.Contains(served, []byte("This is a test message from Alice to Bob.")) {
				t.Errorf("%s: bob: plaintext missing:\n%s", name, served)
			}
		case !encrypted:
			// A signed message gets its signature status on top (signature.go), nothing else.
			if bytes.HasPrefix(served, []byte(SignatureField+": ")) {
				served = served[bytes.IndexByte(served, '\n')+1:]
			}
			if !bytes.Equal(served, msg) {
				t.Errorf("%s: bob: a message that is not encrypted was changed (status %q)", name, st)
			}
		default:
			if st == "decrypted" {
				t.Errorf("%s: bob: decrypted an envelope under two signature layers", name)
			}
		}
		if !encrypted {
			continue
		}
		served, err = d.Rewrite(context.Background(), MessageRef{User: "alice", Mailbox: "INBOX", UIDValidity: 1, UID: uint32(i + 1)}, raw)
		if err != nil {
			t.Fatalf("%s: Rewrite: %v", name, err)
		}
		if st := statusOf(served); st == "decrypted" {
			t.Errorf("%s: alice (not a recipient): status decrypted", name)
		}
	}
	if decrypted < 20 {
		t.Errorf("only %d corpus messages decrypted", decrypted)
	}
}
