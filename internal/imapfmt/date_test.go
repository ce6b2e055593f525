package imapfmt

import (
	"testing"
	"time"
)

// TestSentDate: message-date.c's lenient parse, and its failures.
func TestSentDate(t *testing.T) {
	at := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.Unix()
	}
	for _, c := range []struct {
		in   string
		want int64 // 0: invalid
	}{
		{"Mon, 02 Mar 2026 10:00:00 +0000", at("2026-03-02T10:00:00Z")},
		{"2 Mar 2026 10:00:00 +0130", at("2026-03-02T08:30:00Z")},
		{"3 Mar 26 10:00 EST", at("2026-03-03T15:00:00Z")},
		{"3 Mar 99 10:00 PDT", at("1999-03-03T17:00:00Z")},
		{"Wed, 4 Mar 2026 09:00 (comment) +0100", at("2026-03-04T08:00:00Z")},
		{"Mon, 02 Mar 2026 10:00:00 z", at("2026-03-02T10:00:00Z")},
		{"Mon, 02 Mar 2026 10:00:00 B", at("2026-03-02T08:00:00Z")},
		{"Mon, 02 Mar 2026 10:00:00 XYZ", at("2026-03-02T10:00:00Z")},
		{"Mon, 2 March 2026 09:59:60 GMT", at("2026-03-02T09:59:59Z")},
		{"Mon, 02 Mar 2026 10.00.00", at("2026-03-02T10:00:00Z")},
		{"garbage", 0},
		{"Tue, 31 Feb 2026 10:00:00 +0000", 0},
		{"Mon 02 Mar 2026 10:00:00 +0000", 0},
		{"02 Mar 1899 10:00:00 +0000", 0},
		{"02 Mar 2026 24:00:00 +0000", 0},
		{"02 Mar 2026 10", 0},
		{"01 Jan 1970 00:00:00 +0000", 0},
	} {
		got, ok := SentDate([]byte(c.in))
		if ok != (c.want != 0) || got != c.want {
			t.Errorf("SentDate(%q) = %d, %v; want %d", c.in, got, ok, c.want)
		}
	}
	// Before 1970 the 32 bits without sign wrap, as Dovecot's cache keeps the date; one second before the
	// epoch is utc_mktime's error value, so invalid.
	if got, ok := SentDate([]byte("31 Dec 1969 23:59:58 +0000")); !ok || got != 1<<32-2 {
		t.Errorf("SentDate before 1970 = %d, %v", got, ok)
	}
	if got, ok := SentDate([]byte("31 Dec 1969 23:59:59 +0000")); ok {
		t.Errorf("SentDate(-1) = %d, ok", got)
	}
}
