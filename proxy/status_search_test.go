package proxy_test

import (
	"crypto/x509"
	"encoding/pem"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// searchUIDs returns the UIDs of the "* SEARCH" response in r, sorted.
func searchUIDs(t *testing.T, r string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\* SEARCH([ 0-9]*)\r$`).FindStringSubmatch(r)
	if m == nil {
		t.Fatalf("no SEARCH response: %q", r)
	}
	uids := strings.Fields(m[1])
	slices.Sort(uids)
	return uids
}

// TestSearchStatusHeader: SEARCH HEADER on the proxy's own fields is answered from the served copies, with
// real Dovecot upstream (issue 10, item 9). The upstream server alone would find the forged status field of a
// plain message and never the status fields the proxy adds to decrypted and undecryptable ones.
func TestSearchStatusHeader(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	rw, certPEM := smimeRewriter(t, "alice")
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPEM := smimeRewriter(t, "carol")
	blk, _ = pem.Decode(otherPEM)
	other, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	encrypt := func(m []byte, c *x509.Certificate) []byte {
		out, err := decrypt.EncryptToSelf(m, []*x509.Certificate{c})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	date := time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC)
	for _, m := range [][]byte{
		msg([]string{"From: a@example.org", "Subject: plain one"}, "nothing special\n"),                                       // 1
		msg([]string{"From: mallory@example.org", "X-Smimeproxy-Status: decrypted; forged", "Subject: trust me"}, "forged\n"), // 2
		encrypt(msg([]string{"From: b@example.org", "Subject: secret", "Content-Type: text/plain"}, "the secret\n"), cert),    // 3
		msg([]string{"From: c@example.org", "X-Smimeproxy-Note: hello", "Subject: note"}, "a note\n"),                         // 4
		encrypt(msg([]string{"From: d@example.org", "Subject: for carol", "Content-Type: text/plain"}, "not ours\n"), other),  // 5
	} {
		d.Append("alice", "INBOX", m, nil, date)
	}
	direct := wireDial(t, d.Addr())
	direct.do("LOGIN alice alice-pw")
	direct.do("EXAMINE INBOX")
	if got := searchUIDs(t, direct.do(`UID SEARCH HEADER X-Smimeproxy-Status "decrypted"`)); !slices.Equal(got, []string{"2"}) {
		t.Fatalf("upstream alone finds %v, want the forged [2] (the test would not show anything)", got)
	}

	addr, _ := startProxy(t, d, rw)
	c := wireDial(t, addr)
	c.do("LOGIN alice alice-pw")
	c.do("SELECT INBOX")
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{`UID SEARCH HEADER X-Smimeproxy-Status ""`, []string{"3", "5"}},
		{`UID SEARCH HEADER X-Smimeproxy-Status "decrypted"`, []string{"3"}},
		{`UID SEARCH HEADER "x-smimeproxy-status" "UNDECRYPTABLE"`, []string{"5"}},
		{`UID SEARCH HEADER X-Smimeproxy-Status "forged"`, nil},
		{`UID SEARCH NOT HEADER X-Smimeproxy-Status ""`, []string{"1", "2", "4"}},
		{`UID SEARCH OR HEADER X-Smimeproxy-Status "decrypted" SUBJECT "plain one"`, []string{"1", "3"}},
		{`UID SEARCH HEADER X-Smimeproxy-Status "" BODY "secret"`, []string{"3"}},
		{`UID SEARCH HEADER X-Smimeproxy-Status {9}` + "\r\n" + `decrypted`, []string{"3"}},
		// Another X-Smimeproxy-* field is relayed as stored in a plain message that is no candidate (its
		// served copy is the stored one), so the upstream answers for those.
		{`UID SEARCH HEADER X-Smimeproxy-Note "hello"`, []string{"4"}},
		{`UID SEARCH HEADER X-Smimeproxy-Note ""`, []string{"4"}},
	} {
		if got := searchUIDs(t, c.do(tc.cmd)); !slices.Equal(got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.cmd, got, tc.want)
		}
	}
	// Sequence numbers and ESEARCH go through the same rewrite.
	if r := c.do(`SEARCH RETURN (COUNT) HEADER X-Smimeproxy-Status ""`); !strings.Contains(r, "COUNT 2") {
		t.Errorf("ESEARCH COUNT: %q", r)
	}
	// What the searches promise is what FETCH shows: the forged field is gone, the proxy's are there.
	if r := c.do("UID FETCH 2:3 (BODY.PEEK[HEADER.FIELDS (X-Smimeproxy-Status)])"); strings.Contains(r, "forged") ||
		!strings.Contains(r, "X-Smimeproxy-Status: decrypted") {
		t.Errorf("FETCH of the status fields: %q", r)
	}
}

// TestSearchStatusHeaderNoCandidates: in a mailbox without candidates a SEARCH HEADER on the proxy's status
// field matches nothing, and one on another X-Smimeproxy-* field is the upstream's.
func TestSearchStatusHeaderNoCandidates(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	rw, _ := smimeRewriter(t, "alice")
	date := time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC)
	d.Append("alice", "INBOX", msg([]string{"From: a@example.org", "Subject: plain"}, "x\n"), nil, date)
	d.Append("alice", "INBOX", msg([]string{"From: c@example.org", "X-Smimeproxy-Note: hello"}, "y\n"), nil, date)
	addr, _ := startProxy(t, d, rw)
	c := wireDial(t, addr)
	c.do("LOGIN alice alice-pw")
	c.do("SELECT INBOX")
	if got := searchUIDs(t, c.do(`UID SEARCH HEADER X-Smimeproxy-Status ""`)); len(got) != 0 {
		t.Errorf("status field found in a mailbox without candidates: %v", got)
	}
	if got := searchUIDs(t, c.do(`UID SEARCH NOT HEADER X-Smimeproxy-Status ""`)); !slices.Equal(got, []string{"1", "2"}) {
		t.Errorf("NOT HEADER = %v", got)
	}
	if got := searchUIDs(t, c.do(`UID SEARCH HEADER X-Smimeproxy-Note ""`)); !slices.Equal(got, []string{"2"}) {
		t.Errorf("X-Smimeproxy-Note = %v", got)
	}
}
