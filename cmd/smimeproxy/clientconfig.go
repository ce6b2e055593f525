package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// clientConfigCommand is the 'client-config' subcommand (main.go lists it).
func clientConfigCommand() command {
	return command{
		name:    "client-config",
		summary: "print a ready mail client configuration (thunderbird, mutt, mbsync, apple) for this proxy",
		run:     runClientConfig,
	}
}

// clientConfigs are the clients client-config writes for (mutt and neomutt share one format).
var clientConfigs = map[string]func(w io.Writer, c *clientSetup) error{
	"thunderbird": writeThunderbird,
	"mutt":        writeMutt,
	"neomutt":     writeMutt,
	"mbsync":      writeMbsync,
	"apple":       writeApple,
}

// clientSetup is what a client needs to reach the proxy.
type clientSetup struct {
	host     string
	port     int
	mode     clientTLSMode
	user     string // IMAP login
	email    string
	certFile string // where 'smimeproxy tls export' output is kept (as the user writes it, ~ allowed)
	certPEM  []byte // its contents when readable (embedded by apple)
	smtpHost string
	smtpPort int
}

// runClientConfig prints a configuration for one mail client: the proxy's address, port and security as serve
// runs them (it takes serve's flags, environment and config file), and the client settings that keep the
// decrypted mail off the disk where the client allows it (docs/CLIENTS.md).
func runClientConfig(ctx context.Context, env *cmdEnv, args []string) int {
	names := make([]string, 0, len(clientConfigs))
	for n := range clientConfigs {
		names = append(names, n)
	}
	sort.Strings(names)
	usageLine := "usage: smimeproxy client-config " + strings.Join(names, "|") + " [--user LOGIN] [--email ADDRESS] [--host HOST] [--cert-file PATH] [--smtp HOST:PORT] [serve flags]"
	if len(args) == 0 || clientConfigs[args[0]] == nil {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(env.stdout, usageLine)
			return exitOK
		}
		fmt.Fprintln(env.stderr, usageLine)
		return exitError
	}
	client := args[0]
	fs, sf := newServeFlagSet()
	var host, smtp string
	c := &clientSetup{}
	fs.StringVar(&c.user, "user", "", "IMAP login name (your normal one; default: --email, else a placeholder)")
	fs.StringVar(&c.email, "email", "", "e-mail address of the account (default: --user when it is an address)")
	fs.StringVar(&host, "host", "", "host name clients connect to (default: the --listen host)")
	fs.StringVar(&c.certFile, "cert-file", "~/.config/smimeproxy/proxy.pem", "where you keep the output of 'smimeproxy tls export' (mutt and mbsync point at it; the Apple profile embeds it)")
	fs.StringVar(&smtp, "smtp", "", "your normal SMTP server, host:port (Apple's profile requires one; default: a placeholder)")
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, usageLine)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, env, args[1:]); err != nil {
		if err == errHelp {
			return exitOK
		}
		return exitError
	}
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "smimeproxy client-config: %v\n", err)
		return exitError
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	lhost, lport, err := net.SplitHostPort(sf.listen)
	if err != nil {
		return fail(fmt.Errorf("--listen %q: %w", sf.listen, err))
	}
	if c.port, err = strconv.Atoi(lport); err != nil || c.port <= 0 {
		return fail(fmt.Errorf("--listen %q: give a fixed port", sf.listen))
	}
	c.host = host
	if c.host == "" {
		if lhost == "" || lhost == "0.0.0.0" || lhost == "::" {
			return fail(fmt.Errorf("--listen %q is every interface: give --host, the name clients connect to", sf.listen))
		}
		c.host = lhost
	}
	c.mode = sf.tls.mode(sf.listen)
	switch {
	case c.user == "" && c.email != "":
		c.user = c.email
	case c.email == "" && strings.Contains(c.user, "@"):
		c.email = c.user
	}
	if c.user == "" {
		c.user = "you@example.com"
		fmt.Fprintln(env.stderr, "smimeproxy client-config: no --user: using the placeholder you@example.com")
	}
	if c.email == "" {
		c.email = "you@example.com"
	}
	c.smtpHost, c.smtpPort = "smtp.example.com", 587
	if smtp != "" {
		h, p, err := net.SplitHostPort(smtp)
		n, perr := strconv.Atoi(p)
		if err != nil || perr != nil || n <= 0 || h == "" {
			return fail(fmt.Errorf("--smtp %q: want host:port", smtp))
		}
		c.smtpHost, c.smtpPort = h, n
	}
	if b, err := os.ReadFile(expandHome(c.certFile, env)); err == nil {
		c.certPEM = b
	}
	if err := clientConfigs[client](env.stdout, c); err != nil {
		return fail(err)
	}
	if c.mode != tlsNone && c.certPEM == nil && (client == "mutt" || client == "neomutt" || client == "mbsync" || client == "apple") {
		fmt.Fprintf(env.stderr, "smimeproxy client-config: save the proxy's certificate first: smimeproxy tls export > %s\n", c.certFile)
	}
	return exitOK
}

// expandHome replaces a leading ~/ with $HOME.
func expandHome(p string, env *cmdEnv) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		return filepath.Join(env.getenv("HOME"), rest)
	}
	return p
}

func xmlText(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// writeThunderbird writes a Thunderbird autoconfig file (clientConfig 1.1, the format of Thunderbird's ISP
// database) and, as a comment, the preferences that keep decrypted mail out of the profile.
func writeThunderbird(w io.Writer, c *clientSetup) error {
	socket := map[clientTLSMode]string{tlsNone: "plain", tlsStartTLS: "STARTTLS", tlsImplicit: "SSL"}[c.mode]
	domain := "example.com"
	if _, d, ok := strings.Cut(c.email, "@"); ok && d != "" {
		domain = d
	}
	_, err := fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<!-- smimeproxy: Thunderbird autoconfig ('smimeproxy client-config thunderbird').
     Save as %[1]s.xml in Thunderbird's isp/ directory (or enter the values by hand in the account wizard).
     Keep decrypted mail out of the profile: Account Settings > Synchronization & Storage: untick
     "Keep messages for this account on this computer"; or, before creating the account, in user.js:
       user_pref("mail.server.default.offline_download", false);
       user_pref("mail.server.default.autosync_offline_stores", false);
       user_pref("mailnews.database.global.indexer.enabled", false);
       user_pref("browser.cache.disk.enable", false);
     (the indexer pref stops the global search index, which stores message text; the cache pref keeps every
     opened message out of cache2/). The folder summary (.msf) still keeps a short preview of each message.
     See docs/CLIENTS.md. -->
<clientConfig version="1.1">
  <emailProvider id="%[1]s">
    <domain>%[1]s</domain>
    <displayName>%[2]s via smimeproxy</displayName>
    <displayShortName>smimeproxy</displayShortName>
    <incomingServer type="imap">
      <hostname>%[3]s</hostname>
      <port>%[4]d</port>
      <socketType>%[5]s</socketType>
      <username>%[6]s</username>
      <authentication>password-cleartext</authentication>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>%[7]s</hostname>
      <port>%[8]d</port>
      <socketType>STARTTLS</socketType>
      <username>%[6]s</username>
      <authentication>password-cleartext</authentication>
    </outgoingServer>
  </emailProvider>
</clientConfig>
`, xmlText(domain), xmlText(c.email), xmlText(c.host), c.port, socket, xmlText(c.user), xmlText(c.smtpHost), c.smtpPort)
	return err
}

// muttQuote quotes a value for a muttrc string in double quotes.
func muttQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`", "$", `\$`).Replace(s) + `"`
}

// writeMutt writes a muttrc for mutt and neomutt: no header or body cache (decrypted mail would land there).
func writeMutt(w io.Writer, c *clientSetup) error {
	u := url.URL{Scheme: "imap", User: url.User(c.user), Host: net.JoinHostPort(c.host, strconv.Itoa(c.port)), Path: "/"}
	if c.mode == tlsImplicit {
		u.Scheme = "imaps"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# smimeproxy: mutt/neomutt account ('smimeproxy client-config mutt'); source it from your muttrc.\n")
	fmt.Fprintf(&b, "set folder = %s\nset spoolfile = \"+INBOX\"\nset imap_user = %s\n", muttQuote(u.String()), muttQuote(c.user))
	switch c.mode {
	case tlsNone:
		b.WriteString("# the proxy offers no TLS on this listener (loopback, --starttls=false)\nset ssl_starttls = no\nset ssl_force_tls = no\n")
	default:
		b.WriteString("set ssl_starttls = yes\nset ssl_force_tls = yes\n")
		fmt.Fprintf(&b, "# the proxy's certificate: smimeproxy tls export > %s\nset certificate_file = %s\n", c.certFile, muttQuote(c.certFile))
	}
	b.WriteString("# keep decrypted mail off the disk: no header cache, no body cache\nset header_cache = \"\"\nset message_cachedir = \"\"\n")
	fmt.Fprintf(&b, "set from = %s\n", muttQuote(c.email))
	_, err := io.WriteString(w, b.String())
	return err
}

// writeMbsync writes an mbsync (isync) account, store and channel.
func writeMbsync(w io.Writer, c *clientSetup) error {
	ssl := map[clientTLSMode]string{tlsNone: "None", tlsStartTLS: "STARTTLS", tlsImplicit: "IMAPS"}[c.mode]
	var b strings.Builder
	b.WriteString("# smimeproxy: mbsync account ('smimeproxy client-config mbsync'); add it to ~/.mbsyncrc.\n")
	b.WriteString("# mbsync copies every message into the local Maildir: the decrypted mail is then on this disk\n")
	b.WriteString("# (keep that Maildir on an encrypted volume; see docs/CLIENTS.md).\n")
	fmt.Fprintf(&b, "IMAPAccount smimeproxy\nHost %s\nPort %d\nUser %s\n", c.host, c.port, c.user)
	b.WriteString("# PassCmd \"your password command\"\n")
	fmt.Fprintf(&b, "# isync 1.5 and later call this TLSType\nSSLType %s\n", ssl)
	if c.mode != tlsNone {
		fmt.Fprintf(&b, "# the proxy's certificate: smimeproxy tls export > %s\nCertificateFile %s\n", c.certFile, c.certFile)
	}
	b.WriteString("AuthMechs LOGIN\n\nIMAPStore smimeproxy-remote\nAccount smimeproxy\n\n")
	b.WriteString("MaildirStore smimeproxy-local\nPath ~/Mail/smimeproxy/\nInbox ~/Mail/smimeproxy/INBOX\nSubFolders Verbatim\n\n")
	b.WriteString("Channel smimeproxy\nFar :smimeproxy-remote:\nNear :smimeproxy-local:\nPatterns *\nCreate Near\nSyncState *\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// profileUUID is a stable UUID for a profile payload (re-installing the same setup replaces it).
func profileUUID(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	h[6] = h[6]&0x0f | 0x50 // version 5 style (name-based)
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// writeApple writes a configuration profile (.mobileconfig) with a com.apple.mail.managed payload for Apple
// Mail (macOS, iOS) and, when the exported certificate is at --cert-file, a com.apple.security.pem payload
// so that the device trusts it.
func writeApple(w io.Writer, c *clientSetup) error {
	id := profileUUID("smimeproxy", c.host, strconv.Itoa(c.port), c.user)
	useSSL := "<false/>"
	if c.mode != tlsNone {
		useSSL = "<true/>" // the profile format has one switch for STARTTLS and implicit TLS
	}
	var certPayload string
	if c.certPEM != nil {
		blk, _ := pem.Decode(c.certPEM)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return errors.New("--cert-file does not hold a PEM certificate (write it with 'smimeproxy tls export')")
		}
		cid := profileUUID("smimeproxy-cert", id)
		certPayload = fmt.Sprintf(`		<dict>
			<key>PayloadCertificateFileName</key>
			<string>smimeproxy.cer</string>
			<key>PayloadContent</key>
			<data>%s</data>
			<key>PayloadDisplayName</key>
			<string>smimeproxy local IMAP certificate</string>
			<key>PayloadIdentifier</key>
			<string>org.smimeproxy.cert.%s</string>
			<key>PayloadType</key>
			<string>com.apple.security.pem</string>
			<key>PayloadUUID</key>
			<string>%s</string>
			<key>PayloadVersion</key>
			<integer>1</integer>
		</dict>
`, base64.StdEncoding.EncodeToString(blk.Bytes), cid, cid)
	}
	mid := profileUUID("smimeproxy-mail", id)
	_, err := fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- smimeproxy: Apple Mail profile ('smimeproxy client-config apple'). Apple Mail keeps downloaded messages
     in ~/Library/Mail: set Mail > Settings > Accounts > Account Information > Download Attachments: None, and
     see docs/CLIENTS.md for what stays on disk. -->
<plist version="1.0">
<dict>
	<key>PayloadContent</key>
	<array>
		<dict>
			<key>EmailAccountDescription</key>
			<string>%[1]s (smimeproxy)</string>
			<key>EmailAccountType</key>
			<string>EmailTypeIMAP</string>
			<key>EmailAddress</key>
			<string>%[1]s</string>
			<key>IncomingMailServerAuthentication</key>
			<string>EmailAuthPassword</string>
			<key>IncomingMailServerHostName</key>
			<string>%[2]s</string>
			<key>IncomingMailServerPortNumber</key>
			<integer>%[3]d</integer>
			<key>IncomingMailServerUseSSL</key>
			%[4]s
			<key>IncomingMailServerUsername</key>
			<string>%[5]s</string>
			<key>OutgoingMailServerAuthentication</key>
			<string>EmailAuthPassword</string>
			<key>OutgoingMailServerHostName</key>
			<string>%[6]s</string>
			<key>OutgoingMailServerPortNumber</key>
			<integer>%[7]d</integer>
			<key>OutgoingMailServerUseSSL</key>
			<true/>
			<key>OutgoingMailServerUsername</key>
			<string>%[5]s</string>
			<key>PayloadDisplayName</key>
			<string>smimeproxy IMAP account</string>
			<key>PayloadIdentifier</key>
			<string>org.smimeproxy.mail.%[8]s</string>
			<key>PayloadType</key>
			<string>com.apple.mail.managed</string>
			<key>PayloadUUID</key>
			<string>%[8]s</string>
			<key>PayloadVersion</key>
			<integer>1</integer>
		</dict>
%[9]s	</array>
	<key>PayloadDisplayName</key>
	<string>smimeproxy</string>
	<key>PayloadIdentifier</key>
	<string>org.smimeproxy.profile.%[10]s</string>
	<key>PayloadType</key>
	<string>Configuration</string>
	<key>PayloadUUID</key>
	<string>%[10]s</string>
	<key>PayloadVersion</key>
	<integer>1</integer>
</dict>
</plist>
`, xmlText(c.email), xmlText(c.host), c.port, useSSL, xmlText(c.user), xmlText(c.smtpHost), c.smtpPort, mid, certPayload, id)
	return err
}
