package main

import (
	"bytes"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
)

// statusFields returns the values of header fields of msg whose name starts with X-Smimeproxy- (any case), as
// "name: value" lines, except the signature status X-Smimeproxy-Signature (signature_e2e_test.go checks it).
func statusFields(msg []byte) []string {
	hdr, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	var out []string
	ours := false
	for _, l := range strings.Split(string(hdr), "\r\n") {
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
			if ours {
				out[len(out)-1] += l
			}
			continue
		}
		lower := strings.ToLower(l)
		ours = strings.HasPrefix(lower, "x-smimeproxy-") && !strings.HasPrefix(lower, "x-smimeproxy-signature:")
		if ours {
			out = append(out, l)
		}
	}
	return out
}

// status is the first word of the (single) status field's value, "" without one.
func status(msg []byte) string {
	f := statusFields(msg)
	if len(f) == 0 {
		return ""
	}
	_, v, _ := strings.Cut(f[0], ":")
	v, _, _ = strings.Cut(strings.TrimSpace(v), ";")
	return v
}

// e2eItems are the FETCH items asked, one per command, of every message the proxy rewrites; Dovecot's answer
// for the same bytes (stored plain for the oracle user) is the expected answer.
var e2eItems = []string{
	"RFC822.SIZE", "BODYSTRUCTURE", "BODY", "ENVELOPE",
	"BODY.PEEK[]", "BODY.PEEK[]<0.64>", "BODY.PEEK[]<100.50>", "BODY.PEEK[]<99999999.10>",
	"BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]", "BODY.PEEK[TEXT]<7.30>",
	"BODY.PEEK[1]", "BODY.PEEK[1.MIME]", "BODY.PEEK[1]<3.11>", "BODY.PEEK[1.1]", "BODY.PEEK[2]",
	"BODY.PEEK[HEADER.FIELDS (SUBJECT FROM X-SMIMEPROXY-STATUS)]", "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
	"BINARY.PEEK[1]", "BINARY.SIZE[1]", "BINARY.PEEK[]", "RFC822.HEADER",
}

var literalAnnounce = regexp.MustCompile(`\{(\d+)\}\r\n`)

var headerFieldList = regexp.MustCompile(`HEADER\.FIELDS(\.NOT)? \(([^)]*)\)`)

// normalizeItem makes a FETCH item comparable between go-imap's writer and Dovecot's: a literal becomes the
// quoted string it stands for (RFC 9051 section 4.3: both are strings), header field names in a section spec
// lose optional quotes, and everything is lowercased (MIME types, parameter names, NIL and field names are
// case-insensitive). Body section contents are compared exactly elsewhere (itemLiteral).
func normalizeItem(s string) string {
	s = headerFieldList.ReplaceAllStringFunc(s, func(m string) string { return strings.ReplaceAll(m, `"`, "") })
	var out strings.Builder
	for {
		loc := literalAnnounce.FindStringSubmatchIndex(s)
		if loc == nil {
			out.WriteString(s)
			return strings.ToLower(out.String())
		}
		n, _ := strconv.Atoi(s[loc[2]:loc[3]])
		out.WriteString(strings.TrimSuffix(s[:loc[0]], "~"))
		end := min(loc[1]+n, len(s))
		out.WriteString(strconv.Quote(s[loc[1]:end]))
		s = s[end:]
	}
}

// itemLiteral returns the contents of the first literal of s, and whether there is one.
func itemLiteral(s string) (string, bool) {
	loc := literalAnnounce.FindStringSubmatchIndex(s)
	if loc == nil {
		return "", false
	}
	n, _ := strconv.Atoi(s[loc[2]:loc[3]])
	return s[loc[1]:min(loc[1]+n, len(s))], true
}

// TestE2E is issue 6's end-to-end check of decryption through 'smimeproxy serve': Dovecot upstream with the
// Thunderbird corpus, the OpenSSL fixtures and hostile messages; keys imported with 'smimeproxy keys import'
// into a Vault dev server; Python imaplib and mbsync as clients.
func TestE2E(t *testing.T) {
	start := time.Now()
	w := newE2EWorld(t)
	msgs := bobCorpus(t)
	uids := make([]imap.UID, len(msgs))
	orig := map[imap.UID][]byte{}
	var aliceUIDs []imap.UID
	for i, m := range msgs {
		uids[i] = w.d.Append("bob", "INBOX", m.raw, nil, time.Time{})
		orig[uids[i]] = w.d.Raw("bob", "INBOX", uids[i])
		// Alice gets the same mail; it is not for her.
		aliceUIDs = append(aliceUIDs, w.d.Append("alice", "INBOX", m.raw, nil, time.Time{}))
	}
	carolMsg := p7mMessage(e2eOuter, readFile(t, cmsFixtures+"only-rsa2.der"), "enveloped-data")
	w.d.Append("carol", "INBOX", carolMsg, nil, time.Time{})
	metricsAddr := freeLoopback(t)
	p := w.serve("imaps://"+w.d.TLSAddr(), "--metrics-listen", metricsAddr)
	t.Logf("setup: %v", time.Since(start).Round(time.Millisecond))

	byName := map[string]int{}
	for i, m := range msgs {
		byName[m.name] = i
	}
	served := map[imap.UID][]byte{} // BODY[] as the proxy served it to Bob

	// One FETCH over the whole range, good and bad messages mixed: it succeeds and every message is as expected.
	t.Run("range", func(t *testing.T) {
		res := runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1:*", "(UID RFC822.SIZE BODY.PEEK[])"),
			opFetch("1:*", "(BODY.PEEK[]<99999999.10>)")})
		if len(res) != 3 || res[1].Typ != "OK" || res[1].Error != "" {
			t.Fatalf("FETCH 1:* = %+v", res)
		}
		// A partial whose origin is past the end is empty (RFC 9051 section 6.4.5).
		if past := res[2].messages(); res[2].Typ != "OK" || len(past) != len(msgs) {
			t.Errorf("FETCH 1:* BODY.PEEK[]<99999999.10> = %s, %d messages", res[2].Typ, len(past))
		} else {
			for _, g := range past {
				if lit, ok := itemLiteral(string(g)); (ok && lit != "") || (!ok && !strings.Contains(string(g), `""`)) {
					t.Errorf("origin past the end: %.200q, want empty", g)
				}
			}
		}
		got := res[1].messages()
		if len(got) != len(msgs) {
			t.Fatalf("FETCH 1:* returned %d messages, want %d", len(got), len(msgs))
		}
		for _, g := range got {
			mm := regexp.MustCompile(`UID (\d+)`).FindSubmatch(g)
			sm := regexp.MustCompile(`RFC822\.SIZE (\d+)`).FindSubmatch(g)
			lm := literalAnnounce.FindSubmatchIndex(g)
			if mm == nil || sm == nil || lm == nil {
				t.Errorf("unparsable FETCH response %.200q", g)
				continue
			}
			uid, _ := strconv.Atoi(string(mm[1]))
			size, _ := strconv.Atoi(string(sm[1]))
			n, _ := strconv.Atoi(string(g[lm[2]:lm[3]]))
			body := g[lm[1] : lm[1]+n]
			if size != len(body) {
				t.Errorf("UID %d: RFC822.SIZE %d != len(BODY[]) %d", uid, size, len(body))
			}
			served[imap.UID(uid)] = body
		}
		for i, m := range msgs {
			body, ok := served[uids[i]]
			if !ok {
				t.Errorf("%s (UID %d) missing from FETCH 1:*", m.name, uids[i])
				continue
			}
			checkServed(t, m, body, orig[uids[i]])
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// Every FETCH item of every rewritten message equals what Dovecot answers for the served bytes stored plain.
	t.Run("items", func(t *testing.T) {
		type pair struct{ bob, oracle imap.UID }
		var pairs []pair
		for i := range msgs {
			u := uids[i]
			if bytes.Equal(served[u], orig[u]) {
				continue // relayed
			}
			pairs = append(pairs, pair{u, w.d.Append("oracle", "INBOX", served[u], nil, time.Time{})})
		}
		var bobOps, oracleOps []pyOp
		bobOps = append(bobOps, opSelect("INBOX", true))
		oracleOps = append(oracleOps, opSelect("INBOX", true))
		for _, pr := range pairs {
			for _, it := range e2eItems {
				bobOps = append(bobOps, opFetch(strconv.Itoa(int(pr.bob)), "("+it+")"))
				oracleOps = append(oracleOps, opFetch(strconv.Itoa(int(pr.oracle)), "("+it+")"))
			}
		}
		bobRes := runPy(t, p.addr, "bob", "bob-pw", bobOps)
		oracleRes := runPy(t, w.d.Addr(), "oracle", "oracle-pw", oracleOps)
		if len(bobRes) != len(bobOps) || len(oracleRes) != len(oracleOps) {
			t.Fatalf("imaplib ran %d/%d and %d/%d ops; last: %+v %+v", len(bobRes), len(bobOps), len(oracleRes), len(oracleOps), bobRes[len(bobRes)-1], oracleRes[len(oracleRes)-1])
		}
		// Mismatches are grouped by item: one error per item, naming the messages and showing the first.
		type miss struct {
			names   []string
			example string
		}
		misses := map[string]*miss{}
		report := func(it, name, example string) {
			m := misses[it]
			if m == nil {
				m = &miss{example: example}
				misses[it] = m
			}
			m.names = append(m.names, name)
		}
		for i := 1; i < len(bobOps); i++ {
			pr, it := pairs[(i-1)/len(e2eItems)], e2eItems[(i-1)%len(e2eItems)]
			name := msgs[slices.Index(uids, pr.bob)].name
			b, o := bobRes[i], oracleRes[i]
			if b.Typ == o.Typ && b.Typ != "OK" {
				continue // both refuse (e.g. BINARY of a part that is not base64); response codes may differ
			}
			if b.Typ != o.Typ {
				report(it, name, fmt.Sprintf("proxy %s %q, Dovecot %s", b.Typ, b.text(), o.Typ))
				continue
			}
			bm, om := b.messages(), o.messages()
			if len(bm) != 1 || len(om) != 1 {
				if len(bm) != len(om) {
					report(it, name, fmt.Sprintf("proxy %d responses, Dovecot %d", len(bm), len(om)))
				}
				continue
			}
			if it == "BODYSTRUCTURE" || it == "BODY" || it == "ENVELOPE" {
				// Parameter order and quoting differ between servers; compared parsed (structsEqual).
				if !strings.HasPrefix(fetchItem(bm[0]), it+" (") {
					report(it, name, fmt.Sprintf("proxy answered %.300q", fetchItem(bm[0])))
				}
				continue
			}
			lb, okb := itemLiteral(fetchItem(bm[0]))
			ld, okd := itemLiteral(fetchItem(om[0]))
			if gb, gd := normalizeItem(fetchItem(bm[0])), normalizeItem(fetchItem(om[0])); gb != gd || okb != okd || lb != ld {
				report(it, name, fmt.Sprintf("\nproxy:   %.400q\nDovecot: %.400q", fetchItem(bm[0]), fetchItem(om[0])))
			}
		}
		for _, it := range e2eItems {
			t.Run(it, func(t *testing.T) {
				if m := misses[it]; m != nil {
					t.Errorf("FETCH (%s) differs from Dovecot for %d of %d messages (%s); first: %s", it, len(m.names), len(pairs),
						strings.Join(m.names[:min(4, len(m.names))], ", "), m.example)
				}
			})
		}
		t.Logf("%d messages x %d items compared with Dovecot", len(pairs), len(e2eItems))
		var bobUIDs, oracleUIDs []imap.UID
		for _, pr := range pairs {
			bobUIDs, oracleUIDs = append(bobUIDs, pr.bob), append(oracleUIDs, pr.oracle)
		}
		structsEqual(t, w, p.addr, bobUIDs, oracleUIDs, func(u imap.UID) string { return msgs[slices.Index(uids, u)].name })
	})

	// RFC 9788: the protected Subject inside the encryption is the one ENVELOPE shows.
	t.Run("header-protection", func(t *testing.T) {
		u := uids[byName["gen/header-protection"]]
		res := runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch(strconv.Itoa(int(u)), "(ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")})
		env := string(bytes.Join(res[1].messages(), nil))
		if !strings.Contains(env, "Secret plans for wombat-42") || strings.Contains(env, "[...]") {
			t.Errorf("ENVELOPE of the header-protected message = %q, want the inner Subject", env)
		}
	})

	// A forged status field on a plain message reaches the client through no FETCH item.
	t.Run("forged", func(t *testing.T) {
		u := strconv.Itoa(int(uids[byName["forged/plain"]]))
		items := []string{"BODY.PEEK[HEADER]", "BODY.PEEK[HEADER.FIELDS (X-SMIMEPROXY-STATUS X-SMIMEPROXY-OTHER)]",
			"RFC822.HEADER", "BINARY.PEEK[]", "BODY.PEEK[]<0.100>", "BODY.PEEK[1.MIME]", "ENVELOPE BODYSTRUCTURE RFC822.SIZE"}
		ops := []pyOp{opSelect("INBOX", true)}
		for _, it := range items {
			ops = append(ops, opFetch(u, "("+it+")"))
		}
		res := runPy(t, p.addr, "bob", "bob-pw", ops)
		for i, it := range items {
			r := res[i+1]
			got := string(bytes.Join(r.messages(), nil))
			if r.Typ != "OK" || got == "" {
				t.Errorf("FETCH (%s) = %s %q", it, r.Typ, got)
			}
			if lit, _ := itemLiteral(got); strings.Contains(strings.ToLower(lit), "x-smimeproxy") || strings.Contains(strings.ToLower(lit), "forged") {
				t.Errorf("FETCH (%s) of a plain message with forged status fields: %q", it, got)
			}
		}
	})

	// --key-user-template maps the login to the key set: "bob@example.com" (Dovecot strips the domain) reads
	// Bob's mail with Bob's keys only when the template says {localpart}.
	t.Run("key-user-template", func(t *testing.T) {
		u := strconv.Itoa(int(uids[byName["tb/alice.env.eml"]]))
		ops := []pyOp{opSelect("INBOX", true), opFetch(u, "(BODY.PEEK[])")}
		res := runPy(t, p.addr, "bob@example.com", "bob-pw", ops)
		if b := res[1].literal(t); status(b) == "decrypted" {
			t.Errorf("login bob@example.com, template {user}: decrypted with keys of user %q", "bob")
		}
		q := w.serve("imaps://"+w.d.TLSAddr(), "--key-user-template", "{localpart}")
		res = runPy(t, q.addr, "bob@example.com", "bob-pw", ops)
		if b := res[1].literal(t); status(b) != "decrypted" || !bytes.Contains(b, []byte("This is a test message from Alice to Bob.")) {
			t.Errorf("login bob@example.com, template {localpart}: %q", statusFields(b))
		}
		q.stop()
	})

	// A FETCH without PEEK sets \Seen upstream, though the served bytes are not the upstream's.
	t.Run("seen", func(t *testing.T) {
		u := uids[byName["fixture/rsa-oaep-sha256-aes256-gcm"]]
		if flags := upstreamFlags(t, w, "bob", u); slices.Contains(flags, imap.FlagSeen) {
			t.Fatalf("UID %d already \\Seen upstream", u)
		}
		res := runPy(t, p.addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", false), opFetch(strconv.Itoa(int(u)), "(FLAGS BODY[TEXT])")})
		if res[1].Typ != "OK" || !strings.Contains(string(bytes.Join(res[1].messages(), nil)), `\Seen`) {
			t.Errorf("FETCH BODY[TEXT] = %s %q, want FLAGS with \\Seen", res[1].Typ, res[1].text())
		}
		if flags := upstreamFlags(t, w, "bob", u); !slices.Contains(flags, imap.FlagSeen) {
			t.Errorf("upstream flags after FETCH BODY[TEXT] = %v, want \\Seen", flags)
		}
	})

	// A second user's session sees the same encrypted mail undecrypted.
	t.Run("second-user", func(t *testing.T) {
		res := runPy(t, p.addr, "alice", "alice-pw", []pyOp{opSelect("INBOX", true), opFetch("1:*", "(RFC822.SIZE BODY.PEEK[])")})
		if res[1].Typ != "OK" {
			t.Fatalf("alice FETCH 1:* = %+v", res[1])
		}
		got := map[imap.UID][]byte{}
		for _, g := range res[1].messages() {
			if m := regexp.MustCompile(`UID (\d+)`).FindSubmatch(g); m != nil {
				n, _ := strconv.Atoi(string(m[1]))
				got[imap.UID(n)] = g
			}
		}
		if len(got) != len(msgs) {
			t.Fatalf("alice got %d messages, want %d", len(got), len(msgs))
		}
		for i, m := range msgs {
			g := got[aliceUIDs[i]]
			if st := status(g); st == "decrypted" {
				t.Errorf("alice, %s: status decrypted", m.name)
			}
			if m.want == "decrypted" && !bytes.Contains(g, []byte("undecryptable; reason=no-matching-key")) {
				t.Errorf("alice, %s: want undecryptable; reason=no-matching-key, got %q", m.name, statusFields(g))
			}
			for _, o := range msgs {
				if o.secret && o.marker != "" && bytes.Contains(g, []byte(o.marker)) {
					t.Errorf("alice, %s: holds bob's plaintext %q", m.name, o.marker)
				}
			}
		}
	})

	// SEARCH BODY/TEXT finds words inside encrypted messages, and plain ones still.
	t.Run("search", func(t *testing.T) {
		tbUIDs := func(names ...string) []imap.UID {
			var l []imap.UID
			for _, n := range names {
				l = append(l, uids[byName[n]])
			}
			return l
		}
		cases := []struct {
			criteria []string
			want     []imap.UID
		}{
			{[]string{"BODY", `"test message from Alice to Bob"`}, tbUIDs("tb/alice.env.eml", "tb/alice.env.dsig.SHA256.multipart.eml",
				"tb/alice.dsig.SHA256.multipart.env.eml",
				"tb/alice.sig.SHA256.opaque.env.eml", "tb/alice.html.sig.SHA256.opaque.env.eml", // inside opaque signed-data
				"tb/alice.env.sig.SHA256.opaque.eml", "forged/encrypted")},
			{[]string{"TEXT", "quokka-7"}, tbUIDs("gen/signed-then-encrypted")},
			{[]string{"BODY", "kangaroo-3"}, tbUIDs("gen/header-protection")},
			{[]string{"TEXT", "wombat-42"}, tbUIDs("gen/header-protection")},    // protected Subject: TEXT covers headers
			{[]string{"SUBJECT", "wombat-42"}, tbUIDs("gen/header-protection")}, // the served Subject is the protected one
			{[]string{"SUBJECT", `"[...]"`}, nil},                               // not the stored outer one
			{[]string{"BODY", "zebrafinch"}, tbUIDs("plain/zebrafinch")},
			{[]string{"BODY", "ocelot-5"}, tbUIDs("forged/plain")},
			{[]string{"BODY", "no-such-word-anywhere"}, nil},
		}
		var ops []pyOp
		ops = append(ops, opSelect("INBOX", true))
		for _, c := range cases {
			ops = append(ops, opSearch(c.criteria...))
		}
		res := runPy(t, p.addr, "bob", "bob-pw", ops)
		for i, c := range cases {
			r := res[i+1]
			if r.Typ != "OK" {
				t.Errorf("UID SEARCH %v = %s %q %s", c.criteria, r.Typ, r.text(), r.Error)
				continue
			}
			var got []imap.UID
			for _, f := range strings.Fields(r.text()) {
				n, _ := strconv.Atoi(f)
				got = append(got, imap.UID(n))
			}
			slices.Sort(got)
			want := slices.Clone(c.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("UID SEARCH %v = %v, want %v", c.criteria, got, want)
			}
		}
		// The same search as Alice finds nothing of Bob's plaintext.
		res = runPy(t, p.addr, "alice", "alice-pw", []pyOp{opSelect("INBOX", true), opSearch("BODY", "quokka-7")})
		if strings.TrimSpace(res[1].text()) != "" {
			t.Errorf("alice's SEARCH BODY quokka-7 = %q, want nothing", res[1].text())
		}
	})

	t.Run("append", func(t *testing.T) { testE2EAppend(t, w, p, msgs, uids, served, byName) })
	t.Run("mbsync", func(t *testing.T) { testE2EMbsync(t, p, msgs, uids, served) })
	t.Run("concurrent", func(t *testing.T) { testE2EConcurrent(t, p, msgs, uids, served, false) })
	t.Run("concurrent-uncached", func(t *testing.T) {
		// Without the decrypted-message cache every fetch decrypts again: 50 sessions decrypting at once.
		q := w.serve("imaps://"+w.d.TLSAddr(), "--cache-bytes", "0")
		testE2EConcurrent(t, q, msgs, uids, served, true)
		q.stop()
	})

	t.Run("metrics", func(t *testing.T) {
		body := httpGet(t, "http://"+p.metrics+"/metrics")
		dec := metricValue(t, body, "smimeproxy_messages_decrypted_total")
		und := metricValue(t, body, "smimeproxy_messages_undecryptable_total")
		nDec := 0
		for _, m := range msgs {
			if m.want == "decrypted" {
				nDec++
			}
		}
		if dec < float64(nDec) {
			t.Errorf("smimeproxy_messages_decrypted_total = %v, want at least %d", dec, nDec)
		}
		if und < 1 {
			t.Errorf("smimeproxy_messages_undecryptable_total = %v, want > 0", und)
		}
		for _, reason := range []string{"no-matching-key", "corrupt"} {
			if !strings.Contains(body, `smimeproxy_messages_undecryptable_total{reason="`+reason+`"} `) {
				t.Errorf("/metrics has no undecryptable count for reason %s", reason)
			}
		}
	})

	t.Run("vault-down", func(t *testing.T) { testE2EVaultDown(t, w, p, carolMsg) })

	// The upstream bytes of every message are unchanged, and no mailbox upstream holds plaintext.
	t.Run("upstream-unchanged", func(t *testing.T) {
		for i, m := range msgs {
			if now := w.d.Raw("bob", "INBOX", uids[i]); !bytes.Equal(now, orig[uids[i]]) {
				t.Errorf("%s: upstream bytes changed", m.name)
			}
		}
		var markers []string
		for _, m := range msgs {
			if m.secret && m.marker != "" {
				markers = append(markers, m.marker)
			}
		}
		markers = append(markers, "; ref=", "platypus-9", "wombat-42") // ref= only in status fields this proxy makes
		// The scan itself works: the oracle user holds the served plaintext on purpose.
		if hits := scanMaildirs(t, w.d, "oracle", markers); len(hits) == 0 {
			t.Error("the plaintext scan finds nothing even in the oracle's mailbox of served copies")
		}
		for _, u := range []string{"bob", "alice", "carol", "dave"} {
			if hits := scanMaildirs(t, w.d, u, markers); len(hits) > 0 {
				t.Errorf("plaintext upstream in %s's mail: %v", u, hits)
			}
		}
	})

	// Logs (debug level) never hold plaintext bodies, the Vault token, passwords or key material.
	t.Run("logs", func(t *testing.T) {
		logs := p.stderr.String()
		if !strings.Contains(logs, "decrypted") {
			t.Errorf("debug log lacks decryption lines:\n%s", tailString(logs, 2000))
		}
		w.checkSecrets("serve log", logs)
		for _, m := range msgs {
			if m.secret && m.marker != "" && strings.Contains(logs, m.marker) {
				t.Errorf("serve log holds plaintext of %s (%q)", m.name, m.marker)
			}
		}
		for _, s := range []string{"wombat-42", "platypus-9", "This is a test message from Alice"} {
			if strings.Contains(logs, s) {
				t.Errorf("serve log holds plaintext %q", s)
			}
		}
	})
	t.Logf("TestE2E total: %v", time.Since(start).Round(time.Millisecond))
}

// checkServed checks one message as served to its owner against what the corpus says it should be.
func checkServed(t *testing.T, m e2eMsg, body, upstream []byte) {
	t.Helper()
	fields := statusFields(body)
	switch m.want {
	case "decrypted":
		if len(fields) != 1 || status(body) != "decrypted" || !strings.Contains(fields[0], "mac=") {
			t.Errorf("%s: status fields %q, want one 'decrypted' with our mac", m.name, fields)
			return
		}
		if bytes.Contains(bytes.ToLower(body), []byte("enveloped-data")) {
			t.Errorf("%s: served copy still holds the envelope", m.name)
		}
		if m.marker != "" && !bytes.Contains(body, []byte(m.marker)) {
			t.Errorf("%s: plaintext %q missing from %.300q", m.name, m.marker, body)
		}
	case "undecryptable":
		want := "undecryptable; reason=" + m.reason
		if len(fields) != 1 || !strings.Contains(fields[0], want) {
			t.Errorf("%s: status fields %q, want %q", m.name, fields, want)
		}
		// The upstream message, attached under an explanation (serve --undecryptable=explain, the default).
		if !bytes.Equal(smime.OriginalOf(body), upstream) || !bytes.Contains(body, []byte(smime.Explanation(smime.Reason(m.reason)))) {
			t.Errorf("%s: undecryptable message is not the upstream's under an explanation", m.name)
		}
	case "not-decrypted":
		if status(body) == "decrypted" || bytes.Contains(body, []byte("This is a test message from Alice to Bob.")) {
			t.Errorf("%s: decrypted (fields %q), must not be", m.name, fields)
		}
	case "unchanged":
		if !bytes.Equal(body, upstream) {
			t.Errorf("%s: changed by the proxy (fields %q)", m.name, fields)
		}
	case "stripped":
		if len(fields) != 0 {
			t.Errorf("%s: forged fields reached the client: %q", m.name, fields)
		}
		if !bytes.Contains(body, []byte(m.marker)) {
			t.Errorf("%s: body lost", m.name)
		}
	default:
		panic(fmt.Sprintf("bad want %q", m.want))
	}
}

// upstreamFlags returns the flags Dovecot has for uid in user's INBOX.
func upstreamFlags(t *testing.T, w *e2eWorld, user string, uid imap.UID) []imap.Flag {
	t.Helper()
	c := w.d.Dial(user)
	defer c.Close()
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{Flags: true, UID: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("upstream FETCH FLAGS UID %d: %v", uid, err)
	}
	return msgs[0].Flags
}

// metricValue returns the value of an unlabelled metric in Prometheus text format.
// metricValue returns the value of a metric in Prometheus text format, summed over its label sets.
func metricValue(t *testing.T, body, name string) float64 {
	t.Helper()
	ms := regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(name)+`(?:\{[^}]*\})? (\S+)$`).FindAllStringSubmatch(body, -1)
	if ms == nil {
		t.Fatalf("metric %s missing from /metrics", name)
	}
	var sum float64
	for _, m := range ms {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	return sum
}

// structsEqual fetches BODYSTRUCTURE, BODY and ENVELOPE of bobUIDs through the proxy and of oracleUIDs from
// Dovecot directly with go-imap's client and compares them parsed (parameter order and string syntax aside).
func structsEqual(t *testing.T, w *e2eWorld, proxyAddr string, bobUIDs, oracleUIDs []imap.UID, name func(imap.UID) string) {
	t.Helper()
	get := func(c *imapclient.Client, uids []imap.UID, ext bool) map[imap.UID]*imapclient.FetchMessageBuffer {
		t.Helper()
		if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			t.Fatal(err)
		}
		got, err := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, Envelope: true,
			BodyStructure: &imap.FetchItemBodyStructure{Extended: ext}}).Collect()
		if err != nil {
			t.Fatalf("FETCH BODYSTRUCTURE ENVELOPE: %v", err)
		}
		m := map[imap.UID]*imapclient.FetchMessageBuffer{}
		for _, g := range got {
			m[g.UID] = g
		}
		return m
	}
	pc := goSession(t, proxyAddr, "bob")
	dc := w.d.Dial("oracle")
	for _, ext := range []bool{true, false} {
		pm, dm := get(pc, bobUIDs, ext), get(dc, oracleUIDs, ext)
		for i, u := range bobUIDs {
			p, d := pm[u], dm[oracleUIDs[i]]
			if p == nil || d == nil {
				t.Errorf("%s: missing from FETCH (proxy %v, Dovecot %v)", name(u), p != nil, d != nil)
				continue
			}
			if !reflect.DeepEqual(lowerBS(p.BodyStructure), lowerBS(d.BodyStructure)) {
				t.Errorf("%s: BODYSTRUCTURE (extended %v)\nproxy:   %#v\nDovecot: %#v", name(u), ext, p.BodyStructure, d.BodyStructure)
			}
			if !reflect.DeepEqual(p.Envelope, d.Envelope) {
				t.Errorf("%s: ENVELOPE\nproxy:   %#v\nDovecot: %#v", name(u), p.Envelope, d.Envelope)
			}
		}
	}
}

// lowerBS returns a copy of bs with media types, encodings and parameter names lowercased (case-insensitive
// per RFC 2045 section 5.1).
func lowerBS(bs imap.BodyStructure) imap.BodyStructure {
	lowerParams := func(p map[string]string) map[string]string {
		if p == nil {
			return nil
		}
		out := map[string]string{}
		for k, v := range p {
			out[strings.ToLower(k)] = v
		}
		return out
	}
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		c := *bs
		c.Type, c.Subtype, c.Encoding = strings.ToLower(c.Type), strings.ToLower(c.Subtype), strings.ToLower(c.Encoding)
		c.Params = lowerParams(c.Params)
		if c.Type == "text" && c.Params["charset"] == "" {
			// RFC 2045 section 5.2: text without a charset is us-ascii; Dovecot says so, go-imap leaves it out.
			if c.Params == nil {
				c.Params = map[string]string{}
			}
			c.Params["charset"] = "us-ascii"
		}
		if c.MessageRFC822 != nil {
			m := *c.MessageRFC822
			m.BodyStructure = lowerBS(m.BodyStructure)
			c.MessageRFC822 = &m
		}
		return &c
	case *imap.BodyStructureMultiPart:
		c := *bs
		c.Subtype = strings.ToLower(c.Subtype)
		c.Children = nil
		for _, ch := range bs.Children {
			c.Children = append(c.Children, lowerBS(ch))
		}
		if c.Extended != nil {
			e := *c.Extended
			e.Params = lowerParams(e.Params)
			c.Extended = &e
		}
		return &c
	}
	return bs
}
