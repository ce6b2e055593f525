package proxy_test

import (
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// responseNums returns the numbers of the "* <kind>" response in r, in order.
func responseNums(t *testing.T, r, kind string) []int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\* ` + kind + `([ 0-9]*)\r$`).FindStringSubmatch(r)
	if m == nil {
		t.Fatalf("no %s response: %q", kind, r)
	}
	var out []int
	for _, f := range strings.Fields(m[1]) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

type sizeMsg struct {
	uid, seq, size, arrival int
	subject                 string
}

// TestSearchSortServedSize: SEARCH LARGER/SMALLER and SORT by SIZE, through the proxy with real Dovecot
// upstream, use the served size (RFC822.SIZE as served) of encrypted messages, not their stored ciphertext's
// size, which the upstream server alone uses.
func TestSearchSortServedSize(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	rw, certPEM := smimeRewriter(t, "alice")
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	specs := []struct {
		enc     bool
		body    int
		arrival int
		subject string
	}{
		{false, 10, 0, "gone"}, // expunged below, so that sequence numbers differ from UIDs
		{false, 300, 0, "alpha"},
		{true, 10, 1, "beta"},
		{false, 50, 1, "alpha"},
		{true, 2000, 0, "gamma"},
		{false, 1000, 1, "beta"},
		{true, 100, 2, "alpha"},
		{false, 100, 2, "gamma"},
		{true, 500, 0, "beta"},
	}
	for i, s := range specs {
		m := msg([]string{"From: a@example.org", "Subject: " + s.subject, fmt.Sprintf("Message-ID: <%d@example.org>", i), "Content-Type: text/plain"},
			strings.Repeat("x", s.body-1)+"\n")
		if s.enc {
			if m, err = decrypt.EncryptToSelf(m, []*x509.Certificate{cert}); err != nil {
				t.Fatal(err)
			}
		}
		d.Append("alice", "INBOX", m, nil, base.Add(time.Duration(s.arrival)*time.Hour))
	}
	direct := wireDial(t, d.Addr())
	direct.do("LOGIN alice alice-pw")
	direct.do("SELECT INBOX")
	direct.do("STORE 1 +FLAGS (\\Deleted)")
	direct.do("EXPUNGE")

	addr, _ := startProxy(t, d, rw)
	c := wireDial(t, addr)
	c.do("LOGIN alice alice-pw")
	c.do("SELECT INBOX")
	r := c.do("FETCH 1:* (UID RFC822.SIZE)")
	var msgs []sizeMsg
	for _, m := range regexp.MustCompile(`\* (\d+) FETCH \(UID (\d+) RFC822.SIZE (\d+)\)`).FindAllStringSubmatch(r, -1) {
		seq, _ := strconv.Atoi(m[1])
		uid, _ := strconv.Atoi(m[2])
		size, _ := strconv.Atoi(m[3])
		msgs = append(msgs, sizeMsg{uid: uid, seq: seq, size: size, arrival: specs[uid-1].arrival, subject: specs[uid-1].subject})
	}
	if len(msgs) != 8 || msgs[0].seq != 1 || msgs[0].uid != 2 {
		t.Fatalf("FETCH through the proxy: %q", r)
	}
	upstream := map[int]int{}
	for _, m := range regexp.MustCompile(`\* \d+ FETCH \(UID (\d+) RFC822.SIZE (\d+)\)`).FindAllStringSubmatch(direct.do("FETCH 1:* (UID RFC822.SIZE)"), -1) {
		uid, _ := strconv.Atoi(m[1])
		size, _ := strconv.Atoi(m[2])
		upstream[uid] = size
	}
	for _, m := range msgs {
		if specs[m.uid-1].enc && upstream[m.uid] <= m.size {
			t.Fatalf("UID %d: stored size %d, served %d: the test would not show anything", m.uid, upstream[m.uid], m.size)
		}
	}

	pick := func(f func(m sizeMsg) bool, num func(m sizeMsg) int) []int {
		var out []int
		for _, m := range msgs {
			if f(m) {
				out = append(out, num(m))
			}
		}
		return out
	}
	uidOf := func(m sizeMsg) int { return m.uid }
	seqOf := func(m sizeMsg) int { return m.seq }
	// Thresholds: the served sizes of an encrypted and a plain message, one above one, and one in between.
	for _, n := range []int{msgs[1].size, msgs[4].size, msgs[3].size + 1, 400} {
		for _, tc := range []struct {
			cmd  string
			want func(m sizeMsg) bool
		}{
			{fmt.Sprintf("UID SEARCH LARGER %d", n), func(m sizeMsg) bool { return m.size > n }},
			{fmt.Sprintf("UID SEARCH SMALLER %d", n), func(m sizeMsg) bool { return m.size < n }},
			{fmt.Sprintf("UID SEARCH NOT LARGER %d", n), func(m sizeMsg) bool { return m.size <= n }},
			{fmt.Sprintf("UID SEARCH NOT SMALLER %d NOT LARGER %d", n, n), func(m sizeMsg) bool { return m.size == n }},
			{fmt.Sprintf("UID SEARCH OR SMALLER %d (LARGER %d SUBJECT beta)", n, n), func(m sizeMsg) bool { return m.size < n || m.size > n && m.subject == "beta" }},
			{fmt.Sprintf("UID SEARCH OR SUBJECT alpha NOT (OR LARGER %d BODY nothing)", n), func(m sizeMsg) bool { return m.subject == "alpha" || m.size <= n }},
			{fmt.Sprintf("UID SEARCH RETURN (ALL) SMALLER %d", n), func(m sizeMsg) bool { return m.size < n }},
		} {
			resp := c.do(tc.cmd)
			var got []int
			if strings.Contains(tc.cmd, "RETURN") {
				m := regexp.MustCompile(`\* ESEARCH \(TAG "[^"]*"\) UID(?: ALL ([0-9:,]+))?\r\n`).FindStringSubmatch(resp)
				if m == nil {
					t.Fatalf("%s: %q", tc.cmd, resp)
				}
				got = expandSet(m[1])
			} else {
				got = responseNums(t, resp, "SEARCH")
			}
			if want := pick(tc.want, uidOf); !slices.Equal(got, want) {
				t.Errorf("%s: got %v, want %v (served sizes %v)", tc.cmd, got, want, msgs)
			}
		}
	}
	if got := responseNums(t, c.do(fmt.Sprintf("SEARCH SMALLER %d", msgs[3].size+1)), "SEARCH"); !slices.Equal(got, pick(func(m sizeMsg) bool { return m.size <= msgs[3].size }, seqOf)) {
		t.Errorf("SEARCH SMALLER: got sequence numbers %v", got)
	}

	arrival := func(a, b sizeMsg) int { return cmp.Compare(a.arrival, b.arrival) }
	size := func(a, b sizeMsg) int { return cmp.Compare(a.size, b.size) }
	subject := func(a, b sizeMsg) int { return cmp.Compare(a.subject, b.subject) }
	rev := func(f func(a, b sizeMsg) int) func(a, b sizeMsg) int {
		return func(a, b sizeMsg) int { return -f(a, b) }
	}
	sorted := func(in []sizeMsg, keys ...func(a, b sizeMsg) int) []sizeMsg {
		out := slices.Clone(in)
		slices.SortStableFunc(out, func(a, b sizeMsg) int {
			for _, k := range keys {
				if d := k(a, b); d != 0 {
					return d
				}
			}
			return cmp.Compare(a.seq, b.seq)
		})
		return out
	}
	nums := func(l []sizeMsg, f func(m sizeMsg) int) []int {
		var out []int
		for _, m := range l {
			out = append(out, f(m))
		}
		return out
	}
	var differs bool
	for _, tc := range []struct {
		crit string
		prog string
		keys []func(a, b sizeMsg) int
		in   func(m sizeMsg) bool
	}{
		{"SIZE", "ALL", []func(a, b sizeMsg) int{size}, nil},
		{"REVERSE SIZE", "ALL", []func(a, b sizeMsg) int{rev(size)}, nil},
		{"ARRIVAL REVERSE SIZE", "ALL", []func(a, b sizeMsg) int{arrival, rev(size)}, nil},
		{"REVERSE ARRIVAL SIZE", "ALL", []func(a, b sizeMsg) int{rev(arrival), size}, nil},
		{"DATE REVERSE SIZE", "ALL", []func(a, b sizeMsg) int{arrival, rev(size)}, nil}, // no Date: field, so DATE is the arrival
		{"SUBJECT SIZE", "ALL", []func(a, b sizeMsg) int{subject, size}, nil},
		{"SIZE REVERSE SUBJECT", "ALL", []func(a, b sizeMsg) int{size, rev(subject)}, nil},
		{"REVERSE SUBJECT REVERSE ARRIVAL SIZE", "ALL", []func(a, b sizeMsg) int{rev(subject), rev(arrival), size}, nil},
		{"SIZE", "2:6", []func(a, b sizeMsg) int{size}, func(m sizeMsg) bool { return m.seq >= 2 && m.seq <= 6 }},
		{"SIZE", fmt.Sprintf("LARGER %d", msgs[1].size), []func(a, b sizeMsg) int{size}, func(m sizeMsg) bool { return m.size > msgs[1].size }},
		{"REVERSE SIZE", "BODY nothing", []func(a, b sizeMsg) int{size}, func(sizeMsg) bool { return false }},
	} {
		in := msgs
		if tc.in != nil {
			in = nil
			for _, m := range msgs {
				if tc.in(m) {
					in = append(in, m)
				}
			}
		}
		want := sorted(in, tc.keys...)
		for _, uid := range []bool{false, true} {
			cmd, num := "SORT", seqOf
			if uid {
				cmd, num = "UID SORT", uidOf
			}
			cmd = fmt.Sprintf("%s (%s) UTF-8 %s", cmd, tc.crit, tc.prog)
			resp := c.do(cmd)
			if !strings.Contains(resp, " OK ") {
				t.Fatalf("%s: %q", cmd, resp)
			}
			if got := responseNums(t, resp, "SORT"); !slices.Equal(got, nums(want, num)) {
				t.Errorf("%s: got %v, want %v (served sizes %v)", cmd, got, nums(want, num), msgs)
			}
			if got := responseNums(t, direct.do(cmd), "SORT"); !slices.Equal(got, nums(want, num)) {
				differs = true
			}
		}
	}
	if !differs {
		t.Error("the upstream server alone sorts as expected: the test would not show anything")
	}
	// Without SIZE the SORT is the upstream's.
	if got, want := responseNums(t, c.do("SORT (ARRIVAL SUBJECT) UTF-8 ALL"), "SORT"), responseNums(t, direct.do("SORT (ARRIVAL SUBJECT) UTF-8 ALL"), "SORT"); !slices.Equal(got, want) {
		t.Errorf("SORT (ARRIVAL SUBJECT): got %v, upstream %v", got, want)
	}
}

// expandSet expands an IMAP sequence set of numbers and ranges.
func expandSet(s string) []int {
	var out []int
	for _, r := range strings.Split(s, ",") {
		if r == "" {
			continue
		}
		a, b, ok := strings.Cut(r, ":")
		lo, _ := strconv.Atoi(a)
		hi := lo
		if ok {
			hi, _ = strconv.Atoi(b)
		}
		for i := lo; i <= hi; i++ {
			out = append(out, i)
		}
	}
	return out
}
