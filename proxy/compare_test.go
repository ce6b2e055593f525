package proxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// fetchAll is the FETCH every comparison runs: all RFC 9051 items, sections, partials and BINARY.
func fetchAll() *imap.FetchOptions {
	return &imap.FetchOptions{
		UID: true, Flags: true, InternalDate: true, RFC822Size: true, Envelope: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection: []*imap.FetchItemBodySection{
			{Peek: true},
			{Peek: true, Specifier: imap.PartSpecifierHeader},
			{Peek: true, Specifier: imap.PartSpecifierText},
			{Peek: true, Part: []int{1}},
			{Peek: true, Part: []int{2}, Specifier: imap.PartSpecifierMIME},
			{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "From"}},
			{Peek: true, Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"Subject"}},
			{Peek: true, Partial: &imap.SectionPartial{Offset: 10, Size: 100}},
			{Peek: true, Part: []int{1}, Partial: &imap.SectionPartial{Offset: 1 << 30, Size: 100}},
		},
		BinarySection:     []*imap.FetchItemBinarySection{{Peek: true, Part: []int{1}}, {Peek: true, Part: []int{2}}},
		BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{1}}, {Part: []int{2}}},
	}
}

// TestFetchSameAsDirect fetches every item of the corpus directly from Dovecot and through the proxy, as the
// same user in the same mailbox: identical UIDs, UIDVALIDITY, flags (but \Recent), bytes and structures.
func TestFetchSameAsDirect(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	seed(t, d, "alice")
	addr, _ := startProxy(t, d, nil)
	direct := dial(t, d.Addr(), "alice", "alice-pw", nil)
	via := dial(t, addr, "alice", "alice-pw", nil)

	var got [2]string
	var sel [2]*imap.SelectData
	for i, c := range []*imapclient.Client{direct, via} {
		var err error
		sel[i], err = c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3, 4, 5, 6, 7, 8), fetchAll()).Collect()
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != 8 {
			t.Fatalf("fetched %d messages, want 8", len(msgs))
		}
		got[i] = dump(t, msgs)
		// RFC822.SIZE equals the length of BODY[].
		for _, m := range msgs {
			if b := m.FindBodySection(&imap.FetchItemBodySection{}); int64(len(b)) != m.RFC822Size {
				t.Errorf("UID %d: RFC822.SIZE %d, BODY[] %d bytes", m.UID, m.RFC822Size, len(b))
			}
		}
	}
	if sel[0].UIDValidity != sel[1].UIDValidity || sel[0].NumMessages != sel[1].NumMessages || sel[0].UIDNext != sel[1].UIDNext {
		t.Errorf("SELECT direct %+v, proxy %+v", sel[0], sel[1])
	}
	if got[0] != got[1] {
		t.Errorf("FETCH differs:\n%s", lineDiff(got[0], got[1]))
	}
	// The 4 MB message and the 8-bit latin-1 one come back byte for byte as Dovecot stores them.
	for _, uid := range []imap.UID{1, 4} {
		sec := &imap.FetchItemBodySection{Peek: true}
		m, err := via.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
		if err != nil || len(m) != 1 {
			t.Fatalf("UID FETCH %d: %v", uid, err)
		}
		if raw := d.Raw("alice", "INBOX", uid); !bytes.Equal(m[0].FindBodySection(sec), raw) {
			t.Errorf("UID %d: proxy served %d bytes, Dovecot has %d", uid, len(m[0].FindBodySection(sec)), len(raw))
		}
	}
	if !bytes.Contains(d.Raw("alice", "INBOX", 1), []byte("Caf\xe9")) {
		t.Error("latin-1 bytes not kept")
	}
}

func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out strings.Builder
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			j := 0
			for j < len(x) && j < len(y) && x[j] == y[j] {
				j++
			}
			from := max(0, j-150)
			fmt.Fprintf(&out, "line %d, byte %d:\n- %.400s\n+ %.400s\n", i, j, x[from:], y[from:])
		}
	}
	return out.String()
}

// transcript runs the mutating script on c and records every result; run directly for one user and through
// the proxy for another user seeded identically, the transcripts must be equal.
func transcript(t *testing.T, c *imapclient.Client, d *testenv.Dovecot, user string) string {
	t.Helper()
	var b strings.Builder
	rec := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s (%s): %v", what, user, err)
		}
	}
	sel, err := c.Select("INBOX", nil).Wait()
	must("select", err)
	rec("select n=%d uidnext=%d flags=%v perm=%v", sel.NumMessages, sel.UIDNext, sel.Flags, sel.PermanentFlags)

	search := func(name string, uid bool, crit *imap.SearchCriteria, opts *imap.SearchOptions) {
		t.Helper()
		var cmd *imapclient.SearchCommand
		if uid {
			cmd = c.UIDSearch(crit, opts)
		} else {
			cmd = c.Search(crit, opts)
		}
		data, err := cmd.Wait()
		must("search "+name, err)
		all := "nil"
		if data.All != nil {
			all = data.All.String()
		}
		rec("search %s: all=%s min=%d max=%d count=%d", name, all, data.Min, data.Max, data.Count)
	}
	since := time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)
	search("no hits", false, &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "no such subject xyz"}}}, nil)
	search("no hits uid esearch", true, &imap.SearchCriteria{Body: []string{"nothing-matches-this"}}, &imap.SearchOptions{ReturnAll: true, ReturnCount: true})
	search("not deleted", false, &imap.SearchCriteria{Not: []imap.SearchCriteria{{Flag: []imap.Flag{imap.FlagDeleted}}}}, nil)
	search("or", true, &imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Flag: []imap.Flag{imap.FlagFlagged}}, {NotFlag: []imap.Flag{imap.FlagSeen}}}}}, nil)
	search("header from", false, &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "bob"}}}, nil)
	search("since before", true, &imap.SearchCriteria{Since: since, Before: since.AddDate(0, 0, 3)}, nil)
	search("sent since", true, &imap.SearchCriteria{SentSince: since}, nil)
	search("uid range", true, &imap.SearchCriteria{UID: []imap.UIDSet{{imap.UIDRange{Start: 2, Stop: 5}}}}, nil)
	search("larger text", false, &imap.SearchCriteria{Larger: 100000}, nil)
	search("esearch min max count", true, &imap.SearchCriteria{Text: []string{"note"}}, &imap.SearchOptions{ReturnMin: true, ReturnMax: true, ReturnCount: true})
	search("keyword", false, &imap.SearchCriteria{Flag: []imap.Flag{"$Label1"}}, nil)

	store := func(set imap.NumSet, sf *imap.StoreFlags) {
		t.Helper()
		msgs, err := c.Store(set, sf, nil).Collect()
		must("store", err)
		rec("store %v %v %v -> %s", set, sf.Op, sf.Flags, dump(t, msgs))
	}
	store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen, "$Work"}})
	store(imap.UIDSetNum(3, 5), &imap.StoreFlags{Op: imap.StoreFlagsDel, Flags: []imap.Flag{imap.FlagFlagged}})
	store(imap.SeqSetNum(6), &imap.StoreFlags{Op: imap.StoreFlagsSet, Flags: []imap.Flag{imap.FlagAnswered}})
	store(imap.SeqSetNum(7), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}})

	must("create", c.Create("Work", nil).Wait())
	must("create nested", c.Create("Work/2026", nil).Wait())
	cp, err := c.Copy(imap.SeqSetNum(1, 2), "Work").Wait()
	must("copy", err)
	rec("copy src=%v dst=%v", cp.SourceUIDs, cp.DestUIDs)
	mv, err := c.Move(imap.UIDSetNum(3), "Work/2026").Wait()
	must("move", err)
	rec("move src=%v dst=%v", mv.SourceUIDs, mv.DestUIDs)
	exp, err := c.UIDExpunge(imap.UIDSetNum(7)).Collect()
	must("uid expunge", err)
	rec("uid expunge %v", exp)
	must("store", c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	exp, err = c.Expunge().Collect()
	must("expunge", err)
	rec("expunge %v", exp)

	// APPEND byte-exact with flags and date.
	raw := msg([]string{"From: a@example.org", "Subject: appended =?UTF-8?Q?caf=C3=A9?=", "Content-Type: text/plain; charset=iso-8859-1"}, "8bit: \xe9\xe8\n")
	ac := c.Append("Work", int64(len(raw)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen, "$Appended"}, Time: time.Date(2025, 12, 24, 18, 0, 0, 0, time.FixedZone("", -5*3600))})
	_, err = ac.Write(raw)
	must("append write", err)
	must("append close", ac.Close())
	ad, err := ac.Wait()
	must("append", err)
	rec("append uid=%d", ad.UID)
	if got := d.Raw(user, "Work", ad.UID); !bytes.Equal(got, raw) {
		t.Errorf("%s: appended message is %q, want %q", user, got, raw)
	}

	must("rename", c.Rename("Work/2026", "Work/Old", nil).Wait())
	must("subscribe", c.Subscribe("Work").Wait())
	must("unsubscribe", c.Unsubscribe("Sent").Wait())
	lists := func(name string, ref, pat string, o *imap.ListOptions) {
		t.Helper()
		l, err := c.List(ref, pat, o).Collect()
		must("list "+name, err)
		var lines []string
		for _, x := range l {
			st := ""
			if x.Status != nil {
				st = fmt.Sprintf(" status n=%v unseen=%v", deref(x.Status.NumMessages), deref(x.Status.NumUnseen))
			}
			lines = append(lines, fmt.Sprintf("%s %q %v%s", x.Mailbox, x.Delim, x.Attrs, st))
		}
		slices.Sort(lines)
		rec("list %s: %s", name, strings.Join(lines, "; "))
	}
	lists("all", "", "*", nil)
	lists("special-use", "", "*", &imap.ListOptions{SelectSpecialUse: true, ReturnSpecialUse: true})
	lists("subscribed", "", "*", &imap.ListOptions{SelectSubscribed: true})
	lists("status", "", "Work*", &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true, NumUnseen: true}})
	st, err := c.Status("Work", &imap.StatusOptions{NumMessages: true, UIDNext: true, NumUnseen: true, Size: true}).Wait()
	must("status", err)
	rec("status Work n=%v uidnext=%d unseen=%v size=%v", deref(st.NumMessages), st.UIDNext, deref(st.NumUnseen), *st.Size)
	ns, err := c.Namespace().Wait()
	must("namespace", err)
	rec("namespace %+v", ns)
	must("delete", c.Delete("Work/Old").Wait())
	lists("after delete", "", "*", nil)

	// Final state of INBOX and Work, then CLOSE expunges \Deleted silently.
	for _, mb := range []string{"INBOX", "Work"} {
		_, err := c.Select(mb, nil).Wait()
		must("select "+mb, err)
		msgs, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, InternalDate: true, RFC822Size: true, Envelope: true}).Collect()
		must("fetch "+mb, err)
		rec("%s: %s", mb, dump(t, msgs))
	}
	must("store deleted", c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	must("close", c.UnselectAndExpunge().Wait())
	st, err = c.Status("Work", &imap.StatusOptions{NumMessages: true}).Wait()
	must("status after close", err)
	rec("after close n=%v", deref(st.NumMessages))
	_, err = c.Select("INBOX", nil).Wait()
	must("select", err)
	must("unselect", c.Unselect().Wait())
	must("noop", c.Noop().Wait())
	return b.String()
}

func deref(p *uint32) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestSessionSameAsDirect runs the mutating script directly as alice and through the proxy as bob (same seed).
func TestSessionSameAsDirect(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"alice": "alice-pw", "bob": "bob-pw"}})
	seed(t, d, "alice")
	seed(t, d, "bob")
	addr, _ := startProxy(t, d, nil)
	direct := transcript(t, dial(t, d.Addr(), "alice", "alice-pw", nil), d, "alice")
	via := transcript(t, dial(t, addr, "bob", "bob-pw", nil), d, "bob")
	if direct != via {
		t.Errorf("transcripts differ:\n%s", lineDiff(direct, via))
	}
	t.Logf("transcript:\n%s", via)
	for _, want := range []string{"move src=3 dst=1", "append uid=3\n", "Trash", "\\Trash", "uid expunge [6]", "after close n=2"} {
		if !strings.Contains(via, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
	if !strings.Contains(via, "search no hits: all= min=0") {
		t.Errorf("empty SEARCH not relayed as an empty result")
	}
}

// TestLoginFailureKeepsSession: a wrong password is a NO, and the same connection can then log in.
func TestLoginFailureKeepsSession(t *testing.T) {
	d := testenv.StartDovecot(t, testenv.DovecotOptions{})
	addr, _ := startProxy(t, d, nil)
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Login("alice", "wrong").Wait()
	var ie *imap.Error
	if !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo {
		t.Fatalf("LOGIN with a wrong password = %v, want NO", err)
	}
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatalf("LOGIN after a failure: %v", err)
	}
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	// The upstream's own list, minus only what the relay cannot keep consistent (proxy/caps.go).
	direct := dial(t, d.Addr(), "alice", "alice-pw", nil)
	dcaps, err := direct.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	for c := range dcaps {
		removed := c == "STARTTLS" || strings.HasPrefix(string(c), "COMPRESS=")
		if caps.Has(c) == removed {
			t.Errorf("CAPABILITY %s: through the proxy %v, upstream has it", c, caps.Has(c))
		}
	}
	for c := range caps {
		if !dcaps.Has(c) {
			t.Errorf("CAPABILITY %s through the proxy, not upstream", c)
		}
	}
	for _, want := range []imap.Cap{imap.CapMove, "CONDSTORE", "QRESYNC", "SORT", "ID"} {
		if !caps.Has(want) {
			t.Errorf("CAPABILITY after login lacks %s: %v", want, caps)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}

	// AUTHENTICATE PLAIN is relayed too (RFC 4616), failures as NO.
	c2, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Authenticate(sasl.NewPlainClient("", "alice", "bad")); !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo {
		t.Errorf("AUTHENTICATE PLAIN with a wrong password = %v, want NO", err)
	}
	if err := c2.Authenticate(sasl.NewPlainClient("", "alice", "alice-pw")); err != nil {
		t.Errorf("AUTHENTICATE PLAIN: %v", err)
	}
	if _, err := c2.Select("INBOX", nil).Wait(); err != nil {
		t.Errorf("SELECT after AUTHENTICATE: %v", err)
	}
}
