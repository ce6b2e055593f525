package proxy_test

import (
	"crypto/x509"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/decrypt"
	"github.com/smimeproxy/smimeproxy/internal/testenv"
)

// twinOracle is the oracle of the tests of searches and sorts over served copies: alice's INBOX in a real
// Dovecot holds seeded mail (some of it encrypted to her), and her mailbox Twins holds the copies the proxy
// serves of it, stored plain with the same internal dates. A command through the proxy must answer what
// Dovecot answers over Twins.
type twinOracle struct {
	d         *testenv.Dovecot
	id        *metaIdentity
	commands  []string
	want      []string // Dovecot over Twins
	direct    []string // Dovecot over INBOX (the stored, encrypted mail)
	twin      *wireConn
	storeDir  string
	storeSync string // the header sync that fills the metadata store
}

// newTwinOracle seeds alice's INBOX with seed(t, her certificate, someone else's), message i of n at the internal
// date at(i, n),
// fetches each served copy through a proxy (the first must contain served0) into Twins, and asks Dovecot every
// command over both mailboxes.
func newTwinOracle(t *testing.T, seed func(t *testing.T, own, other *x509.Certificate) [][]byte, at func(i, n int) time.Time,
	served0 string, commands []string, storeSync string) *twinOracle {
	t.Helper()
	o := &twinOracle{d: testenv.StartDovecot(t, testenv.DovecotOptions{NoTLS: true}), id: newMetaIdentity(t, "alice"),
		commands: commands, storeDir: t.TempDir(), storeSync: storeSync}
	other := newMetaIdentity(t, "carol")
	msgs := seed(t, o.id.cert, other.cert)
	for i, m := range msgs {
		o.d.Append("alice", "INBOX", m, nil, at(i, len(msgs)))
	}
	addr, srv := startProxy(t, o.d, o.id.decrypterWith(t, nil, -1, &countMetrics{}))
	c := o.login(t, addr, "SELECT INBOX")
	for i := range msgs {
		served := servedCopy(t, c, uint32(i+1))
		if i == 0 && !strings.Contains(string(served), served0) {
			t.Fatalf("%q is not served: %q", served0, served)
		}
		o.d.Append("alice", "Twins", served, nil, at(i, len(msgs)))
	}
	srv.Close()
	o.twin = o.login(t, o.d.Addr(), "EXAMINE Twins")
	direct := o.login(t, o.d.Addr(), "EXAMINE INBOX")
	for _, cmd := range commands {
		o.want = append(o.want, searchAnswer(t, cmd, o.twin.do(cmd)))
		o.direct = append(o.direct, searchAnswer(t, cmd, direct.do(cmd)))
	}
	return o
}

// login returns a connection to addr logged in as alice, after sel (SELECT or EXAMINE of a mailbox).
func (o *twinOracle) login(t *testing.T, addr, sel string) *wireConn {
	t.Helper()
	c := wireDial(t, addr)
	c.do("LOGIN alice alice-pw")
	c.do(sel)
	return c
}

// check runs every command through the proxy at addr and compares with Dovecot over the twins.
func (o *twinOracle) check(t *testing.T, name, addr string) {
	t.Helper()
	c := o.login(t, addr, "SELECT INBOX")
	for i, cmd := range o.commands {
		if got := searchAnswer(t, cmd, c.do(cmd)); got != o.want[i] {
			t.Errorf("%s: %q:\n got %q\nwant %q (Dovecot over the twins)", name, cmd, got, o.want[i])
		}
	}
}

// checkAll checks the commands through a fresh proxy that decrypts (it must decrypt something), through the
// same proxy again when cached, and, after a header sync filled a metadata store and the proxy restarted,
// from the store with no decryption and no cache lookup. It returns the address of that last proxy, which
// runs until the test ends.
func (o *twinOracle) checkAll(t *testing.T, what string, cached bool) string {
	t.Helper()
	m0 := &countMetrics{}
	addr, srv := startProxy(t, o.d, o.id.decrypterWith(t, nil, -1, m0))
	o.check(t, "decrypting", addr)
	if m0.decrypted.Load() == 0 {
		t.Errorf("the %s decrypted nothing: the served copies were not looked at", what)
	}
	if cached {
		o.check(t, "cached", addr)
	}
	srv.Close()

	ms := openMetaStore(t, o.storeDir)
	addr, srv = startProxy(t, o.d, o.id.decrypterWith(t, ms, -1, &countMetrics{}))
	o.login(t, addr, "SELECT INBOX").do(o.storeSync)
	srv.Close()
	ms.Flush()
	ms.Close()
	ms = openMetaStore(t, o.storeDir)
	t.Cleanup(func() { ms.Close() })
	m2 := &countMetrics{}
	addr, _ = startProxy(t, o.d, o.id.decrypterWith(t, ms, -1, m2))
	o.check(t, "from the store after a restart", addr)
	if n := m2.decrypted.Load() + m2.undecryptable.Load() + m2.misses.Load(); n != 0 {
		t.Errorf("after the restart the %s decrypted %d messages (%d undecryptable, %d cache lookups); want none",
			what, m2.decrypted.Load(), m2.undecryptable.Load(), m2.misses.Load())
	}
	return addr
}

// servedCopy is BODY[] of uid as c's server serves it.
func servedCopy(t *testing.T, c *wireConn, uid uint32) []byte {
	t.Helper()
	r := c.do(fmt.Sprintf("UID FETCH %d (BODY.PEEK[])", uid))
	m := bodyLiteralRE.FindStringSubmatchIndex(r)
	if m == nil {
		t.Fatalf("UID FETCH %d: %.300q", uid, r)
	}
	n, _ := strconv.Atoi(r[m[2]:m[3]])
	return []byte(r[m[1] : m[1]+n])
}

// encryptTo is decrypt.EncryptToSelf of m to c alone.
func encryptTo(t *testing.T, m []byte, c *x509.Certificate) []byte {
	t.Helper()
	out, err := decrypt.EncryptToSelf(m, []*x509.Certificate{c})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
