package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

const tbCorpus = "../../testdata/thunderbird"

// runDecryptCLI runs smimeproxy in-process with the given stdin and environment.
func runDecryptCLI(t *testing.T, vars map[string]string, stdin []byte, args ...string) (int, []byte, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cmdEnv{stdin: bytes.NewReader(stdin), stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}
	code := runMain(context.Background(), env, args)
	if strings.Contains(errb.String(), "PRIVATE KEY") || strings.Contains(out.String(), "PRIVATE KEY") {
		t.Errorf("output shows key material")
	}
	return code, out.Bytes(), errb.String()
}

func readCorpus(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tbCorpus, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const aliceToBob = "This is a test message from Alice to Bob."

func TestDecryptCommand(t *testing.T) {
	home := t.TempDir()
	vars := map[string]string{"PW": "nss", "HOME": home, "XDG_CONFIG_HOME": home}
	bob := filepath.Join(tbCorpus, "Bob.p12")
	alice := filepath.Join(tbCorpus, "Alice.p12")
	envEml := filepath.Join(tbCorpus, "alice.env.eml")

	t.Run("decrypted from file", func(t *testing.T) {
		code, out, errs := runDecryptCLI(t, vars, nil, "decrypt", "--key", bob, "--password-env", "PW", envEml)
		if code != exitOK {
			t.Fatalf("exit %d, stderr %s", code, errs)
		}
		if !bytes.HasPrefix(out, []byte("X-Smimeproxy-Status: decrypted; key=sha256:")) ||
			!bytes.Contains(out, []byte(aliceToBob)) || !bytes.Contains(out, []byte("Subject: enveloped \r\n")) {
			t.Fatalf("stdout %q", out)
		}
		// The same bytes from stdin.
		code, out2, _ := runDecryptCLI(t, vars, readCorpus(t, "alice.env.eml"), "decrypt", "--key", bob, "--password-env", "PW")
		if code != exitOK || !bytes.Equal(out, out2) {
			t.Fatalf("stdin: exit %d, output differs: %v", code, !bytes.Equal(out, out2))
		}
	})
	t.Run("one outer signature", func(t *testing.T) {
		for _, name := range []string{"alice.env.dsig.SHA256.multipart.eml", "alice.env.sig.SHA256.opaque.eml", "alice.sig.SHA256.opaque.env.eml"} {
			code, out, errs := runDecryptCLI(t, vars, nil, "decrypt", "--key", bob, "--password-env", "PW", filepath.Join(tbCorpus, name))
			if code != exitOK || !bytes.HasPrefix(out, []byte("X-Smimeproxy-Status: decrypted;")) {
				t.Errorf("%s: exit %d, stderr %s", name, code, errs)
			}
		}
	})
	t.Run("not encrypted", func(t *testing.T) {
		for _, name := range []string{"alice.dsig.SHA256.multipart.eml", "alice.sig.SHA256.opaque.eml",
			"alice.env.dsig.SHA256.multipart.dave.sig.SHA256.opaque.eml", "alice.env.sig.SHA256.opaque.dave.sig.SHA256.opaque.eml"} {
			code, out, errs := runDecryptCLI(t, vars, nil, "decrypt", "--key", bob, "--password-env", "PW", filepath.Join(tbCorpus, name))
			if code != exitNotEncrypted || !bytes.Equal(out, readCorpus(t, name)) {
				t.Errorf("%s: exit %d (want %d), unchanged %v, stderr %s", name, code, exitNotEncrypted, bytes.Equal(out, readCorpus(t, name)), errs)
			}
		}
	})
	t.Run("not for this key", func(t *testing.T) {
		code, out, errs := runDecryptCLI(t, vars, nil, "decrypt", "--key", alice, "--password-env", "PW", envEml)
		want := append([]byte("X-Smimeproxy-Status: undecryptable; reason=no-matching-key\r\n"), readCorpus(t, "alice.env.eml")...)
		if code != exitUndecryptable || !bytes.Equal(out, want) || !strings.Contains(errs, "no-matching-key") {
			t.Fatalf("exit %d, stderr %s, stdout %q", code, errs, out)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		// alice.env.eml with a damaged base64 body: encrypted, but not decryptable.
		orig := readCorpus(t, "alice.env.eml")
		bad := bytes.Replace(orig, []byte("MIAGCSqGSIb3DQEHA6CAMIACAQAx"), []byte("MIAGCSqGSIb3DQEHA6CA*!*!*!*!"), 1)
		if bytes.Equal(bad, orig) {
			t.Fatal("fixture not damaged")
		}
		code, out, errs := runDecryptCLI(t, vars, bad, "decrypt", "--key", bob, "--password-env", "PW", "-")
		want := append([]byte("X-Smimeproxy-Status: undecryptable; reason=corrupt\r\n"), bad...)
		if code != exitUndecryptable || !bytes.Equal(out, want) || !strings.Contains(errs, "corrupt") {
			t.Fatalf("exit %d, stderr %s, stdout %q", code, errs, out)
		}
	})
	t.Run("PEM key and certificate files", func(t *testing.T) {
		dir := t.TempDir()
		keyPEM, certPEM := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
		openssl(t, "pkcs12", "-in", bob, "-passin", "pass:nss", "-nodes", "-nocerts", "-out", keyPEM)
		openssl(t, "pkcs12", "-in", bob, "-passin", "pass:nss", "-nokeys", "-out", certPEM)
		code, out, errs := runDecryptCLI(t, vars, nil, "decrypt", "--key", keyPEM, "--cert", certPEM, envEml)
		if code != exitOK || !bytes.Contains(out, []byte(aliceToBob)) {
			t.Fatalf("exit %d, stderr %s", code, errs)
		}
		// Two keys: the first does not match, the second does.
		code, _, errs = runDecryptCLI(t, vars, nil, "decrypt", "--key", alice, "--password-env", "PW", "--key", keyPEM, "--cert", certPEM, envEml)
		if code != exitOK {
			t.Fatalf("two keys: exit %d, stderr %s", code, errs)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"decrypt", envEml}, "no keys"},
			{[]string{"decrypt", "--key", bob, envEml}, "wrong password"},
			{[]string{"decrypt", "--key", bob, "--password-env", "NOPE", envEml}, "NOPE"},
			{[]string{"decrypt", "--key", bob, "--password-env", "PW", "/nonexistent/msg.eml"}, "no such file"},
			{[]string{"decrypt", "--key", "/nonexistent/key.p12", envEml}, "no such file"},
			{[]string{"decrypt", "--key", envEml, envEml}, "keystore"},
			{[]string{"decrypt", "--key", bob, "--password-env", "PW", envEml, envEml}, "at most one"},
			{[]string{"decrypt", "--bogus"}, "bogus"},
		} {
			code, out, errs := runDecryptCLI(t, vars, nil, c.args...)
			if code != exitError || !strings.Contains(errs, c.want) || len(out) != 0 {
				t.Errorf("%v: exit %d, stderr %q (want exit 1 mentioning %q), %d bytes out", c.args, code, errs, c.want, len(out))
			}
		}
	})
}

// TestDecryptCommandVault: --user reads the key from a real Vault dev server, imported with keys import.
func TestDecryptCommandVault(t *testing.T) {
	v := testenv.StartVault(t)
	home := t.TempDir()
	vars := map[string]string{"VAULT_ADDR": v.Addr(), "VAULT_TOKEN": v.RootToken(), "HOME": home, "XDG_CONFIG_HOME": home, "PW": "nss"}
	if code, _, errs := runDecryptCLI(t, vars, nil, "keys", "import", "--user", "bob@example.com", "--password-env", "PW",
		filepath.Join(tbCorpus, "Bob.p12")); code != exitOK {
		t.Fatalf("keys import: exit %d: %s", code, errs)
	}
	code, out, errs := runDecryptCLI(t, vars, nil, "decrypt", "--user", "bob@example.com", filepath.Join(tbCorpus, "alice.env.eml"))
	if code != exitOK || !bytes.Contains(out, []byte(aliceToBob)) {
		t.Fatalf("decrypt --user: exit %d, stderr %s", code, errs)
	}
	if strings.Contains(errs, v.RootToken()) {
		t.Error("stderr shows the Vault token")
	}
	// Another user has no key for it.
	code, _, errs = runDecryptCLI(t, vars, nil, "decrypt", "--user", "carol@example.com", filepath.Join(tbCorpus, "alice.env.eml"))
	if code != exitUndecryptable || !strings.Contains(errs, "no-matching-key") {
		t.Fatalf("decrypt --user carol: exit %d, stderr %s", code, errs)
	}
}

func openssl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(testenv.LookPath(t, "openssl"), args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %v: %v: %s", args, err, out)
	}
}
