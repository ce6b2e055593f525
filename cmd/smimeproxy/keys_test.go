package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/crypto/cms"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/keystore"
	"github.com/smimeproxy/smimeproxy/vaultcfg"
)

// keysEnv runs smimeproxy in-process against a real Vault dev server and checks that no output ever contains
// a secret.
type keysEnv struct {
	t       *testing.T
	v       *testenv.Vault
	vars    map[string]string
	secrets []string
	home    string
}

func newKeysEnv(t *testing.T) *keysEnv {
	v := testenv.StartVault(t)
	home := t.TempDir()
	k := &keysEnv{t: t, v: v, home: home, vars: map[string]string{
		"VAULT_ADDR":  v.Addr(),
		"VAULT_TOKEN": v.RootToken(),
		"HOME":        home,
		"P12_PW":      "nss",
	}}
	k.secrets = []string{v.RootToken(), "PRIVATE KEY"}
	return k
}

func (k *keysEnv) run(args ...string) (code int, stdout, stderr string) {
	k.t.Helper()
	var out, errb bytes.Buffer
	env := &cmdEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(s string) string { return k.vars[s] }}
	code = runMain(context.Background(), env, args)
	for _, s := range k.secrets {
		if strings.Contains(out.String()+errb.String(), s) {
			k.t.Errorf("smimeproxy %s: output contains a secret (%.10s...):\nstdout: %s\nstderr: %s", strings.Join(args, " "), s, out.String(), errb.String())
		}
	}
	return code, out.String(), errb.String()
}

// mustRun runs and fails the test unless the exit code is want.
func (k *keysEnv) mustRun(want int, args ...string) (stdout, stderr string) {
	k.t.Helper()
	code, out, errs := k.run(args...)
	if code != want {
		k.t.Fatalf("smimeproxy %s = exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errs)
	}
	return out, errs
}

// addKeySecrets records the bytes of key as secrets that must not show up in output.
func (k *keysEnv) addKeySecrets(key any) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		k.t.Fatal(err)
	}
	k.secrets = append(k.secrets, base64.StdEncoding.EncodeToString(der)[40:80], hex.EncodeToString(der)[80:160])
	if r, ok := key.(*rsa.PrivateKey); ok {
		k.secrets = append(k.secrets, r.D.String()[:30])
	}
}

func (k *keysEnv) store() *vaultcfg.Store {
	s, err := vaultcfg.Open(context.Background(), vaultcfg.Config{Addr: k.v.Addr(), Token: k.v.RootToken()})
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(s.Close)
	return s
}

const corpus = "../../testdata/thunderbird/"

// parseP12 returns the certificate and key of a corpus PKCS#12 file.
func parseP12(t *testing.T, name string) (*x509.Certificate, any) {
	t.Helper()
	data, err := os.ReadFile(corpus + name)
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := keystore.ParseKeyFile(data, []byte("nss"))
	if err != nil {
		t.Fatalf("ParseKeyFile(%s) = %v", name, err)
	}
	pub := key.(interface{ Public() crypto.PublicKey }).Public().(interface{ Equal(crypto.PublicKey) bool })
	for _, c := range chain {
		if pub.Equal(c.PublicKey) {
			return c, key
		}
	}
	t.Fatalf("%s: no certificate for the key", name)
	return nil, nil
}

// envelope returns the parsed CMS envelope of a corpus message (base64 body).
func envelope(t *testing.T, name string) *cms.Envelope {
	t.Helper()
	f, err := os.Open(corpus + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := mail.ReadMessage(f)
	if err != nil {
		t.Fatal(err)
	}
	if mt, _, _ := mime.ParseMediaType(m.Header.Get("Content-Type")); !strings.Contains(mt, "pkcs7-mime") {
		t.Fatalf("%s is not application/pkcs7-mime", name)
	}
	der, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, m.Body))
	if err != nil {
		t.Fatal(err)
	}
	env, err := cms.Parse(der)
	if err != nil {
		t.Fatalf("cms.Parse(%s) = %v", name, err)
	}
	return env
}

// TestKeysImportListRemove imports Thunderbird's PKCS#12 files, looks Bob's key up by the recipient identifiers
// of a real message and decrypts it, then removes it.
func TestKeysImportListRemove(t *testing.T) {
	k := newKeysEnv(t)
	bobCert, bobKey := parseP12(t, "Bob.p12")
	k.addKeySecrets(bobKey)
	_, aliceECKey := parseP12(t, "Alice-ec.p12")
	k.addKeySecrets(aliceECKey)
	bobID := keystore.IDOf(bobCert)

	out, _ := k.mustRun(exitOK, "keys", "import", "--user", "bob@example.com", "--password-env", "P12_PW", corpus+"Bob.p12")
	for _, want := range []string{"imported " + bobID, "Bob", "expires 20", "storage kv"} {
		if !strings.Contains(out, want) {
			t.Errorf("import output lacks %q:\n%s", want, out)
		}
	}
	// Idempotent: the same file again changes nothing in Vault.
	k.mustRun(exitOK, "keys", "import", "--user", "bob@example.com", "--password-env", "P12_PW", corpus+"Bob.p12")
	var meta struct {
		Data struct {
			CurrentVersion int `json:"current_version"`
		} `json:"data"`
	}
	json.Unmarshal(k.v.MustRequest("GET", "secret/metadata/smimeproxy/bob@example.com/"+bobID, ""), &meta)
	if meta.Data.CurrentVersion != 1 {
		t.Errorf("KV version after re-import = %d, want 1", meta.Data.CurrentVersion)
	}

	// EC keys cannot go to Transit; the refusal says why. Without --transit they go to KV.
	_, errs := k.mustRun(exitError, "keys", "import", "--user", "bob@example.com", "--transit", "--password-env", "P12_PW", corpus+"Alice-ec.p12")
	if !strings.Contains(errs, "ECDH") || strings.Count(errs, "\n") != 1 {
		t.Errorf("import --transit of an EC key: stderr %q, want one line explaining ECDH", errs)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("nss\n"), 0o600)
	out, _ = k.mustRun(exitOK, "keys", "import", "--user", "bob@example.com", "--password-file", pw, corpus+"Alice-ec.p12")
	if !strings.Contains(out, "EC ") {
		t.Errorf("EC import output = %q, want the key kind", out)
	}

	out, _ = k.mustRun(exitOK, "keys", "list", "--user", "bob@example.com")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("list = %d lines, want 2:\n%s", len(lines), out)
	}
	if !strings.Contains(out, bobID) || !strings.Contains(strings.ToLower(out), "bob@example.com") || !strings.Contains(out, bobCert.NotAfter.UTC().Format(time.DateOnly)) || !strings.Contains(out, "kv") {
		t.Errorf("list lacks Bob's id, email, expiry or storage:\n%s", out)
	}
	if out, _ := k.mustRun(exitOK, "keys", "list", "--user", "alice@example.com"); out != "" {
		t.Errorf("list for another user = %q, want nothing", out)
	}

	// The key in Vault decrypts Thunderbird's message to Bob, found by the message's recipient identifiers.
	env := envelope(t, "alice.env.eml")
	keys, err := k.store().Lookup(context.Background(), "bob@example.com", env.Recipients())
	if err != nil || len(keys) != 1 || keys[0].ID != bobID {
		t.Fatalf("Lookup(message recipients) = %v, %v; want Bob's key", keys, err)
	}
	pt, _, err := env.Decrypt(keys[0].Cert, keys[0].Private)
	if err != nil || !bytes.Contains(pt, []byte("This is a test message from Alice to Bob.")) {
		t.Errorf("Decrypt with the KV key = %q, %v", pt, err)
	}
	if keys, _ := k.store().Lookup(context.Background(), "alice@example.com", env.Recipients()); len(keys) != 0 {
		t.Errorf("Lookup for another user found %d keys", len(keys))
	}

	out, _ = k.mustRun(exitOK, "keys", "remove", "--user", "bob@example.com", bobID)
	if !strings.Contains(out, "removed "+bobID) {
		t.Errorf("remove output = %q", out)
	}
	out, _ = k.mustRun(exitOK, "keys", "list", "--user", "bob@example.com")
	if strings.Contains(out, bobID) || strings.Count(out, "\n") != 1 {
		t.Errorf("list after remove:\n%s", out)
	}
	_, errs = k.mustRun(exitError, "keys", "remove", "--user", "bob@example.com", bobID)
	if !strings.Contains(errs, "no key "+bobID) {
		t.Errorf("second remove: %q", errs)
	}
}

// TestKeysImportTransit imports Bob's RSA key into Transit and decrypts a Thunderbird message through it.
func TestKeysImportTransit(t *testing.T) {
	k := newKeysEnv(t)
	bobCert, bobKey := parseP12(t, "Bob.p12")
	k.addKeySecrets(bobKey)
	out, errs := k.mustRun(exitOK, "keys", "import", "--user", "bob", "--transit", "--password-env", "P12_PW", corpus+"Bob.p12")
	if !strings.Contains(out, "storage transit") || !strings.Contains(errs, "OAEP SHA-1") {
		t.Errorf("import --transit: stdout %q stderr %q", out, errs)
	}
	id := keystore.IDOf(bobCert)
	data := string(k.v.MustRequest("GET", "secret/data/smimeproxy/bob/"+id, ""))
	if strings.Contains(data, "PRIVATE KEY") {
		t.Error("KV holds the private key of a Transit import")
	}
	out, _ = k.mustRun(exitOK, "keys", "list", "--user", "bob")
	if !strings.Contains(out, "transit") {
		t.Errorf("list = %q, want storage transit", out)
	}
	env := envelope(t, "alice.env.eml")
	keys, err := k.store().Lookup(context.Background(), "bob", env.Recipients())
	if err != nil || len(keys) != 1 {
		t.Fatalf("Lookup = %v, %v", keys, err)
	}
	if _, ok := keys[0].Private.(*vaultcfg.TransitKey); !ok {
		t.Fatalf("Lookup private key = %T, want *vaultcfg.TransitKey", keys[0].Private)
	}
	pt, _, err := env.Decrypt(keys[0].Cert, keys[0].Private)
	if err != nil || !bytes.Contains(pt, []byte("This is a test message from Alice to Bob.")) {
		t.Errorf("Decrypt through Transit = %q, %v", pt, err)
	}
	k.mustRun(exitOK, "keys", "remove", "--user", "bob", id)
}

// TestKeysImportPEM imports a key and its certificate from two PEM files, an expired one with a warning.
func TestKeysImportPEM(t *testing.T) {
	k := newKeysEnv(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k.addKeySecrets(key)
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(7),
		Subject:        pkix.Name{CommonName: "Old Key"},
		EmailAddresses: []string{"old@example.com"},
		NotBefore:      time.Now().Add(-3 * 365 * 24 * time.Hour),
		NotAfter:       time.Now().Add(-365 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	p8, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)

	// The key alone is refused: its certificate is needed.
	_, errs := k.mustRun(exitError, "keys", "import", "--user", "old", keyFile)
	if !strings.Contains(errs, "certificate") {
		t.Errorf("import of a lone key: %q", errs)
	}
	out, errs := k.mustRun(exitOK, "keys", "import", "--user", "old", keyFile, certFile)
	sum := sha256.Sum256(der)
	id := hex.EncodeToString(sum[:])[:16]
	if !strings.Contains(out, "imported "+id) || !strings.Contains(out, "old@example.com") {
		t.Errorf("import output = %q", out)
	}
	if !strings.Contains(errs, "warning") || !strings.Contains(errs, "expired") {
		t.Errorf("import of an expired certificate: stderr %q, want a warning", errs)
	}
	out, _ = k.mustRun(exitOK, "keys", "list", "--user", "old")
	if !strings.Contains(out, id) || !strings.Contains(out, "expired") {
		t.Errorf("list = %q, want the key marked expired", out)
	}
}

// TestKeysErrors: bad input and Vault failures give one clear line on stderr and exit 1.
func TestKeysErrors(t *testing.T) {
	k := newKeysEnv(t)
	_, bobKey := parseP12(t, "Bob.p12")
	k.addKeySecrets(bobKey)
	k.secrets = append(k.secrets, "nss\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no user", []string{"keys", "list"}, "--user is required"},
		{"bad user", []string{"keys", "list", "--user", "../bob"}, "invalid user name"},
		{"unknown subcommand", []string{"keys", "frobnicate"}, "unknown subcommand"},
		{"no files", []string{"keys", "import", "--user", "bob"}, "no key files"},
		{"wrong password", []string{"keys", "import", "--user", "bob", corpus + "Bob.p12"}, "Bob.p12"},
		{"missing file", []string{"keys", "import", "--user", "bob", "/nonexistent.p12"}, "nonexistent"},
		{"empty password env", []string{"keys", "import", "--user", "bob", "--password-env", "NOPE", corpus + "Bob.p12"}, "NOPE"},
		{"bad id", []string{"keys", "remove", "--user", "bob", "../../x"}, "invalid key id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := k.mustRun(exitError, tc.args...)
			if !strings.Contains(errs, tc.want) {
				t.Errorf("stderr = %q, want %q", errs, tc.want)
			}
		})
	}

	t.Run("permission denied", func(t *testing.T) {
		k.v.MustRequest("PUT", "sys/policy/alice", `{"policy":"path \"secret/metadata/smimeproxy/alice\" { capabilities = [\"list\"] }"}`)
		var tok struct {
			Auth struct {
				ClientToken string `json:"client_token"`
			} `json:"auth"`
		}
		json.Unmarshal(k.v.MustRequest("POST", "auth/token/create", `{"policies":["alice"],"ttl":"10m"}`), &tok)
		k.secrets = append(k.secrets, tok.Auth.ClientToken)
		k.vars["VAULT_TOKEN"] = tok.Auth.ClientToken
		defer func() { k.vars["VAULT_TOKEN"] = k.v.RootToken() }()
		k.mustRun(exitOK, "keys", "list", "--user", "alice")
		_, errs := k.mustRun(exitError, "keys", "list", "--user", "bob")
		if !strings.Contains(errs, "permission denied") || !strings.Contains(errs, "secret/metadata/smimeproxy/bob") || strings.Count(errs, "\n") != 1 {
			t.Errorf("list of another user's keys: stderr %q, want one line naming the path", errs)
		}
	})
	t.Run("vault down", func(t *testing.T) {
		k.v.Stop()
		defer k.v.Restart()
		_, errs := k.mustRun(exitError, "keys", "list", "--user", "bob")
		if !strings.Contains(errs, "unreachable") || strings.Count(errs, "\n") != 1 {
			t.Errorf("list with vault down: stderr %q, want one line saying unreachable", errs)
		}
	})
	t.Run("token from ~/.vault-token", func(t *testing.T) {
		delete(k.vars, "VAULT_TOKEN")
		defer func() { k.vars["VAULT_TOKEN"] = k.v.RootToken() }()
		_, errs := k.mustRun(exitError, "keys", "list", "--user", "bob")
		if !strings.Contains(errs, "vault login") {
			t.Errorf("no token: stderr %q, want advice to run vault login", errs)
		}
		os.WriteFile(filepath.Join(k.home, ".vault-token"), []byte(k.v.RootToken()), 0o600)
		k.mustRun(exitOK, "keys", "list", "--user", "bob")
	})
	t.Run("approle flags", func(t *testing.T) {
		_, errs := k.mustRun(exitError, "keys", "list", "--user", "bob", "--vault-approle-role-id", "x")
		if !strings.Contains(errs, "secret-id") {
			t.Errorf("approle without secret id: %q", errs)
		}
	})
}

// TestKeysAppRole runs keys commands with AppRole credentials (secret id from the environment).
func TestKeysAppRole(t *testing.T) {
	k := newKeysEnv(t)
	v := k.v
	v.MustRequest("PUT", "sys/policy/smimeproxy", `{"policy":"path \"secret/data/smimeproxy/*\" { capabilities = [\"create\",\"read\",\"update\"] }\npath \"secret/metadata/smimeproxy/*\" { capabilities = [\"list\",\"read\",\"delete\"] }"}`)
	v.MustRequest("POST", "sys/auth/approle", `{"type":"approle"}`)
	v.MustRequest("POST", "auth/approle/role/keys", `{"token_policies":["smimeproxy"],"token_ttl":"1m"}`)
	var rid, sid struct {
		Data map[string]string `json:"data"`
	}
	json.Unmarshal(v.MustRequest("GET", "auth/approle/role/keys/role-id", ""), &rid)
	json.Unmarshal(v.MustRequest("POST", "auth/approle/role/keys/secret-id", "{}"), &sid)
	k.secrets = append(k.secrets, sid.Data["secret_id"])
	delete(k.vars, "VAULT_TOKEN")
	k.vars["MY_SECRET_ID"] = sid.Data["secret_id"]
	_, bobKey := parseP12(t, "Bob.p12")
	k.addKeySecrets(bobKey)
	args := []string{"--user", "bob", "--vault-approle-role-id", rid.Data["role_id"], "--vault-approle-secret-id-env", "MY_SECRET_ID"}
	k.mustRun(exitOK, append(append([]string{"keys", "import"}, args...), "--password-env", "P12_PW", corpus+"Bob.p12")...)
	out, _ := k.mustRun(exitOK, append([]string{"keys", "list"}, args...)...)
	if strings.Count(out, "\n") != 1 {
		t.Errorf("list with approle = %q, want one key", out)
	}
	k.vars["MY_SECRET_ID"] = "wrong"
	_, errs := k.mustRun(exitError, append([]string{"keys", "list"}, args...)...)
	if !strings.Contains(errs, "approle") {
		t.Errorf("list with a wrong secret id: %q", errs)
	}
}

// TestKeysPolicy: the printed policies, loaded into Vault, let a proxy token read and an admin token import.
func TestKeysPolicy(t *testing.T) {
	k := newKeysEnv(t)
	proxyHCL, _ := k.mustRun(exitOK, "keys", "policy", "--vault-prefix", "smime")
	adminHCL, _ := k.mustRun(exitOK, "keys", "policy", "--admin", "--vault-prefix", "smime")
	// The proxy reads users' keys; it may write only its own state beside them and the users' address books.
	if !strings.Contains(proxyHCL, "path \"secret/data/smime/+/*\" {\n  capabilities = [\"read\"]\n}") ||
		strings.Count(proxyHCL, "create") != 3 || !strings.Contains(proxyHCL, `"secret/data/smime/.tls/*"`) ||
		!strings.Contains(proxyHCL, `"secret/data/smime/.proxy/*"`) || !strings.Contains(proxyHCL, `"secret/data/smime/+/contacts/*"`) {
		t.Errorf("proxy policy:\n%s", proxyHCL)
	}
	token := func(name, hcl string) string {
		body, _ := json.Marshal(map[string]string{"policy": hcl})
		k.v.MustRequest("PUT", "sys/policy/"+name, string(body))
		var tok struct {
			Auth struct {
				ClientToken string `json:"client_token"`
			} `json:"auth"`
		}
		json.Unmarshal(k.v.MustRequest("POST", "auth/token/create", `{"policies":["`+name+`"],"ttl":"10m"}`), &tok)
		k.secrets = append(k.secrets, tok.Auth.ClientToken)
		return tok.Auth.ClientToken
	}
	k.vars["VAULT_TOKEN"] = token("admin", adminHCL)
	k.mustRun(exitOK, "keys", "import", "--vault-prefix", "smime", "--user", "bob", "--transit", "--password-env", "P12_PW", corpus+"Bob.p12")
	k.vars["VAULT_TOKEN"] = token("proxy", proxyHCL)
	out, _ := k.mustRun(exitOK, "keys", "list", "--vault-prefix", "smime", "--user", "bob")
	if !strings.Contains(out, "transit") {
		t.Errorf("list with the proxy policy = %q", out)
	}
	_, errs := k.mustRun(exitError, "keys", "import", "--vault-prefix", "smime", "--user", "bob", "--password-env", "P12_PW", corpus+"Alice.p12")
	if !strings.Contains(errs, "permission denied") {
		t.Errorf("import with the proxy policy: %q", errs)
	}
}

// TestKeysPolicyUser: 'keys policy --user U' prints a policy that, loaded into Vault, reaches U's keys and no
// one else's; --templated prints the one templated policy and, with --user, the entity metadata; the help says
// which token each workstation gets; bad combinations and user names are refused.
func TestKeysPolicyUser(t *testing.T) {
	k := newKeysEnv(t)
	for _, u := range []string{"bob", "alice"} {
		k.mustRun(exitOK, "keys", "import", "--vault-prefix", "smime", "--user", u, "--password-env", "P12_PW", corpus+strings.ToUpper(u[:1])+u[1:]+".p12")
	}
	bobHCL, _ := k.mustRun(exitOK, "keys", "policy", "--vault-prefix", "smime", "--user", "bob")
	if !strings.Contains(bobHCL, `"secret/data/smime/bob/.proxy/*"`) || strings.Contains(bobHCL, `"secret/data/smime/*"`) {
		t.Errorf("bob's policy:\n%s", bobHCL)
	}
	body, _ := json.Marshal(map[string]string{"policy": bobHCL})
	k.v.MustRequest("PUT", "sys/policy/bob", string(body))
	var tok struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	json.Unmarshal(k.v.MustRequest("POST", "auth/token/create", `{"policies":["bob"],"ttl":"10m"}`), &tok)
	k.secrets = append(k.secrets, tok.Auth.ClientToken)
	k.vars["VAULT_TOKEN"] = tok.Auth.ClientToken
	if out, _ := k.mustRun(exitOK, "keys", "list", "--vault-prefix", "smime", "--vault-user", "bob", "--user", "bob"); !strings.Contains(strings.ToLower(out), "bob@example.com") {
		t.Errorf("bob's token listing bob's keys: %q", out)
	}
	if _, errs := k.mustRun(exitError, "keys", "list", "--vault-prefix", "smime", "--user", "alice"); !strings.Contains(errs, "permission denied") {
		t.Errorf("bob's token listing alice's keys: %q", errs)
	}
	k.vars["VAULT_TOKEN"] = k.v.RootToken()

	tmpl, _ := k.mustRun(exitOK, "keys", "policy", "--templated")
	if !strings.Contains(tmpl, `"secret/data/smimeproxy/{{identity.entity.metadata.smimeproxy_user}}/*"`) ||
		!strings.Contains(tmpl, `"transit/decrypt/smimeproxy-{{identity.entity.metadata.smimeproxy_transit}}-*"`) {
		t.Errorf("templated policy:\n%s", tmpl)
	}
	md, _ := k.mustRun(exitOK, "keys", "policy", "--templated", "--user", "alice@example.com")
	if md != "metadata=smimeproxy_user=alice@example.com metadata=smimeproxy_transit=ff8d9819fc0e12bf\n" {
		t.Errorf("entity metadata = %q", md)
	}
	_, help := k.mustRun(exitOK, "keys", "policy", "-h")
	for _, want := range []string{"Which token each workstation gets", "--vault-user U", "never give it to a proxy"} {
		if !strings.Contains(help, want) {
			t.Errorf("keys policy -h lacks %q:\n%s", want, help)
		}
	}
	for _, args := range [][]string{{"--admin", "--user", "bob"}, {"--admin", "--templated"}, {"--user", ".."}, {"--user", "a/b"}, {"--user", "+"}, {"--templated", "--user", ".tls"}} {
		if _, errs := k.mustRun(exitError, append([]string{"keys", "policy"}, args...)...); strings.Count(errs, "\n") != 1 {
			t.Errorf("keys policy %v: want one error line, got %q", args, errs)
		}
	}
}

// TestKeysImportProgress: a bulk import reports progress per file on stderr and one result line per key.
func TestKeysImportProgress(t *testing.T) {
	k := newKeysEnv(t)
	out, errs := k.mustRun(exitOK, "keys", "import", "--user", "bob", "--password-env", "P12_PW", corpus+"Bob.p12", corpus+"Alice.p12")
	for _, want := range []string{"[1/2] " + corpus + "Bob.p12", "[2/2] " + corpus + "Alice.p12"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s\nstdout:\n%s", want, errs, out)
		}
	}
	if n := strings.Count(out, "imported "); n != 2 {
		t.Errorf("%d result lines, want 2:\n%s", n, out)
	}
}
