package main

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/tlscert"
)

// clientConfig runs 'smimeproxy client-config args...' and returns its exit code, stdout and stderr.
func clientConfig(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	env, out, errb := testEnv(vars)
	code := runMain(context.Background(), env, append([]string{"client-config"}, args...))
	return code, out.String(), errb.String()
}

// wellFormed fails the test unless s is well-formed XML.
func wellFormed(t *testing.T, what, s string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	d.Strict = true
	for {
		if _, err := d.Token(); err == io.EOF {
			return
		} else if err != nil {
			t.Fatalf("%s is not well-formed XML: %v\n%s", what, err, s)
		}
	}
}

// TestClientConfig: each client's configuration names the proxy's address, port and security as serve runs
// them (STARTTLS by default on loopback, plain with --starttls=false, implicit TLS with --tls) and the settings
// that keep decrypted mail off the disk.
func TestClientConfig(t *testing.T) {
	home := t.TempDir()
	vars := map[string]string{"HOME": home}
	type tbConfig struct {
		Incoming struct {
			Hostname   string `xml:"hostname"`
			SocketType string `xml:"socketType"`
			Username   string `xml:"username"`
			Port       int    `xml:"port"`
		} `xml:"emailProvider>incomingServer"`
	}
	for _, tc := range []struct {
		flags  []string
		socket string
	}{{nil, "STARTTLS"}, {[]string{"--starttls=false"}, "plain"}, {[]string{"--tls"}, "SSL"}} {
		code, out, errb := clientConfig(t, vars, append([]string{"thunderbird", "--listen", "127.0.0.1:1993", "--user", "bob@example.org"}, tc.flags...)...)
		if code != exitOK {
			t.Fatalf("thunderbird %v = %d: %s", tc.flags, code, errb)
		}
		wellFormed(t, "thunderbird autoconfig", out)
		var c tbConfig
		if err := xml.Unmarshal([]byte(out), &c); err != nil {
			t.Fatal(err)
		}
		if c.Incoming.Hostname != "127.0.0.1" || c.Incoming.Port != 1993 || c.Incoming.SocketType != tc.socket || c.Incoming.Username != "bob@example.org" {
			t.Errorf("thunderbird %v: %+v, want socket %s", tc.flags, c.Incoming, tc.socket)
		}
		if !strings.Contains(out, `user_pref("mail.server.default.offline_download", false);`) ||
			!strings.Contains(out, `user_pref("browser.cache.disk.enable", false);`) {
			t.Errorf("thunderbird config does not switch offline copies off:\n%s", out)
		}
	}

	// mutt: STARTTLS with the exported certificate, no caches; the user name is escaped in the URL.
	code, out, errb := clientConfig(t, vars, "mutt", "--user", "bob@example.org", "--cert-file", "/etc/x/proxy.pem")
	if code != exitOK {
		t.Fatalf("mutt = %d: %s", code, errb)
	}
	for _, want := range []string{`set folder = "imap://bob%40example.org@127.0.0.1:1143/"`, "set ssl_starttls = yes", "set ssl_force_tls = yes",
		`set certificate_file = "/etc/x/proxy.pem"`, `set header_cache = ""`, `set message_cachedir = ""`} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("muttrc lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errb, "smimeproxy tls export > /etc/x/proxy.pem") {
		t.Errorf("no hint to export the certificate: %q", errb)
	}
	if _, out, _ := clientConfig(t, vars, "neomutt", "--starttls=false"); !strings.Contains(out, "set ssl_starttls = no\n") || strings.Contains(out, "certificate_file") {
		t.Errorf("neomutt without TLS:\n%s", out)
	}

	// mbsync
	if _, out, _ := clientConfig(t, vars, "mbsync", "--user", "bob"); !regexp.MustCompile(`(?m)^SSLType STARTTLS$`).MatchString(out) ||
		!strings.Contains(out, "CertificateFile ~/.config/smimeproxy/proxy.pem\n") || !strings.Contains(out, "Port 1143\n") {
		t.Errorf("mbsync:\n%s", out)
	}

	// apple: a well-formed plist; the exported certificate embedded when it is at --cert-file.
	cert, err := tlscert.Generate(tlscert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(home, "proxy.pem")
	if err := os.WriteFile(certFile, cert.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errb = clientConfig(t, vars, "apple", "--user", "bob@example.org", "--cert-file", certFile, "--smtp", "smtp.example.org:587")
	if code != exitOK {
		t.Fatalf("apple = %d: %s", code, errb)
	}
	wellFormed(t, "mobileconfig", out)
	blk, _ := pem.Decode(cert.CertPEM)
	for _, want := range []string{"<string>com.apple.mail.managed</string>", "<integer>1143</integer>", "<string>smtp.example.org</string>",
		"<data>" + base64.StdEncoding.EncodeToString(blk.Bytes) + "</data>", "<string>com.apple.security.pem</string>"} {
		if !strings.Contains(out, want) {
			t.Errorf("mobileconfig lacks %q", want)
		}
	}
	if strings.Contains(out, "PRIVATE") {
		t.Error("mobileconfig holds a private key")
	}
	if _, again, _ := clientConfig(t, vars, "apple", "--user", "bob@example.org", "--cert-file", certFile, "--smtp", "smtp.example.org:587"); again != out {
		t.Error("the profile's UUIDs are not stable (re-installing would add a second account)")
	}

	// Errors: unknown client, every-interface listener without --host.
	if code, _, errb := clientConfig(t, vars, "outlook"); code == exitOK || !strings.Contains(errb, "usage:") {
		t.Errorf("unknown client: %d %q", code, errb)
	}
	if code, _, errb := clientConfig(t, vars, "mutt", "--listen", "0.0.0.0:1143"); code == exitOK || !strings.Contains(errb, "give --host") {
		t.Errorf("0.0.0.0 without --host: %d %q", code, errb)
	}
}
