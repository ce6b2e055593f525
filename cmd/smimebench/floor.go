package main

//lint:file-ignore SA1019 S/MIME key transport is RSA PKCS #1 v1.5 for most senders (RFC 8551 section 2.3); decryption is constant-time with implicit rejection (crypto/cms keytrans.go)

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/mimepart"
)

// cryptoFloor times, for every message, the least any decryption costs: one RSA-2048 PKCS#1 v1.5 private-key
// operation (RFC 8017 section 7.2.2) unwrapping a 32-byte key, base64-decoding the message body (RFC 2045
// section 6.8) and AES-256-CBC over the decoded bytes, into a reused buffer, in-process and sequentially. It
// is the reference of the first-fetch goal. It fails only when the key operations fail.
func cryptoFloor(key *rsa.PrivateKey, twins []twin) (time.Duration, error) {
	wrapped := make([][]byte, len(twins))
	for i := range wrapped {
		cek := make([]byte, 32)
		rand.Read(cek)
		w, err := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, cek)
		if err != nil {
			return 0, fmt.Errorf("smimebench: floor: %w", err)
		}
		wrapped[i] = w
	}
	bodies := make([][]byte, len(twins))
	maxLen := 0
	for i, t := range twins {
		_, bodies[i] = mimepart.Split(t.enc)
		maxLen = max(maxLen, base64.StdEncoding.DecodedLen(len(bodies[i])))
	}
	buf := make([]byte, maxLen)
	iv := make([]byte, aes.BlockSize)
	start := time.Now()
	for i := range twins {
		cek, err := rsa.DecryptPKCS1v15(nil, key, wrapped[i])
		if err != nil {
			return 0, fmt.Errorf("smimebench: floor: %w", err)
		}
		n, err := base64.StdEncoding.Decode(buf, bodies[i])
		if err != nil {
			return 0, fmt.Errorf("smimebench: floor: message %d: %w", i, err)
		}
		block, err := aes.NewCipher(cek)
		if err != nil {
			return 0, fmt.Errorf("smimebench: floor: %w", err)
		}
		ct := buf[:n-n%aes.BlockSize]
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(ct, ct)
	}
	return time.Since(start), nil
}

// opensslRun is a sample of messages written to files for `openssl cms -decrypt`.
type opensslRun struct {
	keyFile, certFile string
	files             []string
	sample            []twin
}

// prepareOpenssl writes the key, the certificate and each message of sample (as Dovecot serves it) to dir.
func prepareOpenssl(dir string, id *identity, sample []twin) (*opensslRun, error) {
	o := &opensslRun{keyFile: filepath.Join(dir, "key.pem"), certFile: filepath.Join(dir, "cert.pem"), sample: sample}
	if err := os.WriteFile(o.keyFile, id.keyPEM(), 0o600); err != nil {
		return nil, fmt.Errorf("smimebench: %w", err)
	}
	if err := os.WriteFile(o.certFile, id.certPEM(), 0o600); err != nil {
		return nil, fmt.Errorf("smimebench: %w", err)
	}
	for i, t := range sample {
		f := filepath.Join(dir, fmt.Sprintf("msg%d.eml", i))
		if err := os.WriteFile(f, t.enc, 0o600); err != nil {
			return nil, fmt.Errorf("smimebench: %w", err)
		}
		o.files = append(o.files, f)
	}
	return o, nil
}

// run runs `openssl cms -decrypt -inkey key.pem -recip cert.pem -in msgN.eml` once per message, sequentially,
// each a new process with its output captured (the way a shell tool decrypts), and returns the time per
// message. Each output must hold the plain twin's body.
func (o *opensslRun) run(ctx context.Context) (time.Duration, error) {
	outs := make([][]byte, len(o.files))
	start := time.Now()
	for i, f := range o.files {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		var out, errOut bytes.Buffer
		cmd := exec.CommandContext(ctx, "openssl", "cms", "-decrypt", "-inkey", o.keyFile, "-recip", o.certFile, "-in", f)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		cancel()
		if err != nil {
			return 0, fmt.Errorf("smimebench: openssl cms -decrypt %s: %v: %s", f, err, bytes.TrimSpace(errOut.Bytes()))
		}
		outs[i] = out.Bytes()
	}
	per := time.Since(start) / time.Duration(len(o.files))
	for i, out := range outs {
		// openssl writes the decrypted MIME entity (Content-* header, blank line, body); compare the bodies
		// with line ends normalised.
		_, body, ok := bytes.Cut(toLF(out), []byte("\n\n"))
		if !ok || !bytes.Equal(body, toLF(o.sample[i].body)) {
			return 0, fmt.Errorf("smimebench: openssl decrypted sample message %d to something else than its plain twin", i)
		}
	}
	return per, nil
}
