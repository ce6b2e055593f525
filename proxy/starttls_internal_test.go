package proxy

import "testing"

// TestFilterCapsStartTLS: STARTTLS offered by the relay stands where the upstream listed it, else before the
// first AUTH=, else last; without the offer it is removed as before.
func TestFilterCapsStartTLS(t *testing.T) {
	for _, tc := range []struct{ in, offer, plain string }{
		{"IMAP4rev1 LITERAL+ STARTTLS AUTH=PLAIN", "IMAP4rev1 LITERAL+ STARTTLS AUTH=PLAIN", "IMAP4rev1 LITERAL+ AUTH=PLAIN"},
		{"IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=LOGIN", "IMAP4rev1 SASL-IR STARTTLS AUTH=PLAIN AUTH=LOGIN", "IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=LOGIN"},
		{"IMAP4rev1 AUTH=CRAM-MD5 IDLE", "IMAP4rev1 STARTTLS IDLE", "IMAP4rev1 IDLE"},
		{"IMAP4rev1 IDLE", "IMAP4rev1 IDLE STARTTLS", "IMAP4rev1 IDLE"},
		{"IMAP4rev1 starttls LOGINDISABLED AUTH=PLAIN", "IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN", "IMAP4rev1 LOGINDISABLED AUTH=PLAIN"},
	} {
		if got := string(filterCapList([]byte(tc.in), false, true)); got != tc.offer {
			t.Errorf("%q offering STARTTLS: %q, want %q", tc.in, got, tc.offer)
		}
		if got := string(filterCapList([]byte(tc.in), false, false)); got != tc.plain {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.plain)
		}
	}
	got := filterCapsInLineTLS([]byte("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"), true, true, func([]byte) {})
	if string(got) != "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n" {
		t.Errorf("greeting: %q", got)
	}
}
