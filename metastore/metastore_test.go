package metastore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func keyOf(user string) []byte {
	k := sha256.Sum256([]byte("test key of " + user))
	return k[:]
}

func openDisk(t *testing.T, dir string, max int64) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, Namespace: "imaps://mail.example.org", MaxBytes: max,
		Key: func(_ context.Context, user string) ([]byte, error) { return keyOf(user), nil }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func val(s string) func() []byte { return func() []byte { return []byte(s) } }

func mustGet(t *testing.T, s *Store, user, mbox string, uv, uid uint32, want string) {
	t.Helper()
	got, ok := s.Get(context.Background(), user, mbox, uv, uid)
	if !ok || string(got) != want {
		t.Fatalf("Get(%s %s %d %d) = %q, %v; want %q", user, mbox, uv, uid, got, ok, want)
	}
}

func mustMiss(t *testing.T, s *Store, user, mbox string, uv, uid uint32) {
	t.Helper()
	if got, ok := s.Get(context.Background(), user, mbox, uv, uid); ok {
		t.Fatalf("Get(%s %s %d %d) = %q; want a miss", user, mbox, uv, uid, got)
	}
}

func TestDiskRoundTripAndReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openDisk(t, dir, 0)
	s.Put(ctx, "alice", "INBOX", 7, 1, val("Subject: quarterly figures"))
	s.Put(ctx, "alice", "Archive/Project Falcon", 7, 1, val("Subject: falcon launch"))
	s.Flush()
	mustGet(t, s, "alice", "INBOX", 7, 1, "Subject: quarterly figures")
	mustGet(t, s, "alice", "Archive/Project Falcon", 7, 1, "Subject: falcon launch")
	mustMiss(t, s, "alice", "INBOX", 8, 1)
	mustMiss(t, s, "bob", "INBOX", 7, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openDisk(t, dir, 0)
	defer s.Close()
	mustGet(t, s, "alice", "INBOX", 7, 1, "Subject: quarterly figures")
	st, ok := s.Stats(ctx, "alice")
	if !ok || st.Entries != 2 || st.Bytes <= 0 {
		t.Fatalf("stats = %+v, %v", st, ok)
	}
}

// TestNoPlaintextOnDisk: values and mailbox names never reach the file in clear.
func TestNoPlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openDisk(t, dir, 0)
	secret := []string{"quarterly", "figures", "Falcon", "alice@example.org", "Project"}
	s.Put(ctx, "alice", "Archive/Project Falcon", 9, 3, val("From: alice@example.org\r\nSubject: quarterly figures\r\n"))
	s.Flush()
	s.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 || filepath.Base(files[0]) != FileName("alice") {
		t.Fatalf("files = %v", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range append(secret, "alice") {
		if bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(w))) {
			t.Errorf("%q found in the store file", w)
		}
	}
}

// TestOtherUsersKey: a user's file cannot be read with another user's key: the check fails, every sealed
// value fails to open, and the store starts afresh instead of serving anything.
func TestOtherUsersKey(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openDisk(t, dir, 0)
	s.Put(ctx, "alice", "INBOX", 1, 1, val("alice's metadata"))
	s.Flush()
	s.Close()
	path := filepath.Join(dir, FileName("alice"))

	bobs, err := newSealer(keyOf("bob"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	_ = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			n++
			if _, err := bobs.open(adOf(k), v[tickLen:]); err == nil {
				t.Errorf("alice's entry opened with bob's key")
			}
			return nil
		})
	})
	db.Close()
	if n != 1 {
		t.Fatalf("%d entries in alice's file", n)
	}
	if _, err := openFile(path, bobs, "imaps://mail.example.org"); err != ErrWrongKey {
		t.Fatalf("open with bob's key: %v, want ErrWrongKey", err)
	}
	// The Store given the wrong key for alice (a replaced key in Vault) serves nothing of the old file.
	wrong, _ := Open(Options{Dir: dir, Namespace: "imaps://mail.example.org",
		Key: func(context.Context, string) ([]byte, error) { return keyOf("bob"), nil }})
	defer wrong.Close()
	mustMiss(t, wrong, "alice", "INBOX", 1, 1)
}

func TestNamespaceChangeDiscards(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openDisk(t, dir, 0)
	s.Put(ctx, "alice", "INBOX", 1, 1, val("x"))
	s.Flush()
	s.Close()
	other, _ := Open(Options{Dir: dir, Namespace: "imaps://other.example.org",
		Key: func(_ context.Context, u string) ([]byte, error) { return keyOf(u), nil }})
	defer other.Close()
	mustMiss(t, other, "alice", "INBOX", 1, 1)
}

func testInvalidation(t *testing.T, s *Store) {
	ctx := context.Background()
	for uid := uint32(1); uid <= 5; uid++ {
		s.Put(ctx, "alice", "INBOX", 10, uid, val("m"+strconv.Itoa(int(uid))))
	}
	s.Put(ctx, "alice", "Sent", 10, 1, val("sent"))
	s.Flush()
	// Expunged: 2 and 4; 5 is above upTo and stays.
	live := map[uint32]bool{1: true, 3: true}
	s.Prune(ctx, "alice", "INBOX", 10, func(u uint32) bool { return live[u] }, 4)
	s.Flush()
	mustGet(t, s, "alice", "INBOX", 10, 1, "m1")
	mustMiss(t, s, "alice", "INBOX", 10, 2)
	mustGet(t, s, "alice", "INBOX", 10, 3, "m3")
	mustMiss(t, s, "alice", "INBOX", 10, 4)
	mustGet(t, s, "alice", "INBOX", 10, 5, "m5")
	// A new UIDVALIDITY drops the mailbox's old entries, and only that mailbox's.
	s.Put(ctx, "alice", "INBOX", 11, 1, val("new"))
	s.Flush()
	mustMiss(t, s, "alice", "INBOX", 10, 1)
	mustMiss(t, s, "alice", "INBOX", 10, 5)
	mustGet(t, s, "alice", "INBOX", 11, 1, "new")
	mustGet(t, s, "alice", "Sent", 10, 1, "sent")
	if st, _ := s.Stats(ctx, "alice"); st.Entries != 2 {
		t.Fatalf("entries = %d, want 2", st.Entries)
	}
}

func TestInvalidationDisk(t *testing.T) {
	s := openDisk(t, t.TempDir(), 0)
	defer s.Close()
	testInvalidation(t, s)
}

func TestInvalidationMemory(t *testing.T) {
	s, _ := Open(Options{})
	testInvalidation(t, s)
}

func testLRU(t *testing.T, s *Store) {
	ctx := context.Background()
	big := string(bytes.Repeat([]byte("v"), 1000))
	for uid := uint32(1); uid <= 8; uid++ {
		s.Put(ctx, "alice", "INBOX", 1, uid, val(big))
		s.Flush()
		if uid == 6 {
			mustGet(t, s, "alice", "INBOX", 1, 1, big) // 1 is used again: it stays
			s.Flush()
		}
	}
	for uid := uint32(9); uid <= 14; uid++ {
		s.Put(ctx, "alice", "INBOX", 1, uid, val(big))
		s.Flush()
	}
	st, _ := s.Stats(ctx, "alice")
	if st.Bytes > 10<<10 {
		t.Fatalf("bytes = %d over the bound", st.Bytes)
	}
	mustMiss(t, s, "alice", "INBOX", 1, 2)
	mustGet(t, s, "alice", "INBOX", 1, 14, big)
}

func TestLRUDisk(t *testing.T) {
	s := openDisk(t, t.TempDir(), 10<<10)
	defer s.Close()
	testLRU(t, s)
}

func TestLRUMemory(t *testing.T) {
	s, _ := Open(Options{MaxBytes: 10 << 10})
	testLRU(t, s)
}

// TestKeyFailure: without a key the store serves nothing and drops writes instead of failing.
func TestKeyFailure(t *testing.T) {
	s, _ := Open(Options{Dir: t.TempDir(), Key: func(context.Context, string) ([]byte, error) {
		return nil, fmt.Errorf("vault sealed")
	}})
	defer s.Close()
	s.Put(context.Background(), "alice", "INBOX", 1, 1, val("x"))
	mustMiss(t, s, "alice", "INBOX", 1, 1)
}

// TestKill9MidWrite: a process killed while it writes leaves a file that opens and holds what it committed.
func TestKill9MidWrite(t *testing.T) {
	if dir := os.Getenv("METASTORE_WRITER_DIR"); dir != "" {
		s := openDisk(t, dir, 0)
		ctx := context.Background()
		for uid := uint32(1); ; uid++ {
			s.Put(ctx, "alice", "INBOX", 1, uid, val("value of "+strconv.Itoa(int(uid))))
			if uid%200 == 0 {
				s.Flush()
				fmt.Println("flushed", uid)
			}
		}
	}
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9MidWrite$")
		cmd.Env = append(os.Environ(), "METASTORE_WRITER_DIR="+dir)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		var seen []byte
		deadline := time.Now().Add(20 * time.Second)
		for !bytes.Contains(seen, []byte("flushed 1000")) && time.Now().Before(deadline) {
			n, err := out.Read(buf)
			seen = append(seen, buf[:n]...)
			if err != nil {
				break
			}
		}
		time.Sleep(time.Duration(round*7) * time.Millisecond) // land somewhere inside a later write
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if !bytes.Contains(seen, []byte("flushed 1000")) {
			t.Fatalf("writer did not get far: %q", seen)
		}
		db, err := bolt.Open(filepath.Join(dir, FileName("alice")), 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		if err := db.View(func(tx *bolt.Tx) error { return <-tx.Check() }); err != nil {
			t.Fatalf("round %d: consistency check: %v", round, err)
		}
		db.Close()
		s := openDisk(t, dir, 0)
		for _, uid := range []uint32{1, 500, 1000} {
			mustGet(t, s, "alice", "INBOX", 1, uid, "value of "+strconv.Itoa(int(uid)))
		}
		s.Close()
	}
}

// TestStatAndRemoveFile: `cache stats` reads the counters without the key; `cache clear` refuses while a
// proxy holds the file and removes it afterwards.
func TestStatAndRemoveFile(t *testing.T) {
	dir := t.TempDir()
	s := openDisk(t, dir, 0)
	s.Put(context.Background(), "alice", "INBOX", 1, 1, val("x"))
	s.Put(context.Background(), "alice", "INBOX", 1, 2, val("y"))
	s.Flush()
	if err := RemoveFile(dir, "alice"); err == nil {
		t.Fatal("RemoveFile succeeded while the store is open")
	}
	s.Close()
	st, err := StatFile(dir, "alice")
	if err != nil || st.Entries != 2 || st.FileBytes == 0 {
		t.Fatalf("StatFile = %+v, %v", st, err)
	}
	if err := RemoveFile(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := StatFile(dir, "alice"); !os.IsNotExist(err) {
		t.Fatalf("StatFile after RemoveFile: %v", err)
	}
	if err := RemoveFile(dir, "bob"); !os.IsNotExist(err) {
		t.Fatalf("RemoveFile(no file) = %v", err)
	}
}

// TestRotate: a key rotation refuses while a proxy holds the file (without touching the key), keeps the file
// when replacing the key fails, and otherwise leaves no entry readable: the next store under the new key
// starts empty and works.
func TestRotate(t *testing.T) {
	dir := t.TempDir()
	key := keyOf("alice")
	open := func() *Store {
		s, err := Open(Options{Dir: dir, Namespace: "ns",
			Key: func(context.Context, string) ([]byte, error) { return bytes.Clone(key), nil }})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	s.Put(context.Background(), "alice", "INBOX", 1, 1, val("secret subject"))
	s.Flush()
	called := false
	newKey := func() error { called = true; key = keyOf("alice, rotated"); return nil }
	if err := Rotate(dir, "alice", newKey); err == nil || called {
		t.Fatalf("Rotate while the store is open = %v, key replaced: %v", err, called)
	}
	s.Close()
	if err := Rotate(dir, "alice", func() error { return fmt.Errorf("vault down") }); err == nil || err.Error() != "vault down" {
		t.Fatalf("Rotate with a failing key replacement = %v", err)
	}
	s = open()
	mustGet(t, s, "alice", "INBOX", 1, 1, "secret subject")
	s.Close()
	if err := Rotate(dir, "alice", newKey); err != nil || !called {
		t.Fatalf("Rotate = %v, key replaced: %v", err, called)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName("alice"))); !os.IsNotExist(err) {
		t.Fatalf("the old file survived the rotation: %v", err)
	}
	s = open()
	mustMiss(t, s, "alice", "INBOX", 1, 1)
	s.Put(context.Background(), "alice", "INBOX", 1, 2, val("after"))
	s.Flush()
	s.Close()
	s = open()
	mustGet(t, s, "alice", "INBOX", 1, 2, "after")
	s.Close()
	// A user without a file still gets a new key.
	called = false
	if err := Rotate(dir, "bob", newKey); err != nil || !called {
		t.Fatalf("Rotate(no file) = %v, key replaced: %v", err, called)
	}
}

func testRangeAndState(t *testing.T, s *Store, reopen func() *Store) {
	ctx := context.Background()
	for _, uid := range []uint32{2, 3, 5, 8, 9} {
		s.Put(ctx, "alice", "INBOX", 10, uid, val("m"+strconv.Itoa(int(uid))))
	}
	s.Put(ctx, "alice", "Sent", 10, 4, val("sent"))
	s.Put(ctx, "alice", "INBOX", 11, 6, val("other uidvalidity")) // drops INBOX 10
	s.Put(ctx, "alice", "INBOX", 10, 1, val("m1"))                // drops INBOX 11
	for _, uid := range []uint32{2, 3, 5, 8, 9} {
		s.Put(ctx, "alice", "INBOX", 10, uid, val("m"+strconv.Itoa(int(uid))))
	}
	s.PutState(ctx, "alice", "INBOX", 10, []byte("state of INBOX"))
	s.PutState(ctx, "alice", "Sent", 10, []byte("state of Sent"))
	s.Flush()
	if reopen != nil {
		s = reopen()
	}
	rangeOf := func(from uint32, max int) (string, uint32) {
		var got []string
		through := s.GetRange(ctx, "alice", "INBOX", 10, from, max, func(uid uint32, v []byte) {
			got = append(got, fmt.Sprintf("%d=%s", uid, v))
		})
		return fmt.Sprint(got), through
	}
	for _, c := range []struct {
		from    uint32
		max     int
		want    string
		through uint32
	}{
		{1, 100, "[1=m1 2=m2 3=m3 5=m5 8=m8 9=m9]", math.MaxUint32},
		{4, 2, "[5=m5 8=m8]", 8},
		{4, 3, "[5=m5 8=m8 9=m9]", math.MaxUint32},
		{10, 3, "[]", math.MaxUint32},
	} {
		if got, through := rangeOf(c.from, c.max); got != c.want || through != c.through {
			t.Errorf("GetRange(from %d, max %d) = %s through %d; want %s through %d", c.from, c.max, got, through, c.want, c.through)
		}
	}
	if v, ok := s.GetState(ctx, "alice", "INBOX", 10); !ok || string(v) != "state of INBOX" {
		t.Errorf("GetState(INBOX) = %q, %v", v, ok)
	}
	if _, ok := s.GetState(ctx, "alice", "INBOX", 11); ok {
		t.Errorf("GetState of another UIDVALIDITY found a state")
	}
	if _, ok := s.GetState(ctx, "bob", "INBOX", 10); ok {
		t.Errorf("GetState of another user found a state")
	}
	// A state replaces the older one; a new UIDVALIDITY drops the state of the old one (and its entries).
	s.PutState(ctx, "alice", "Sent", 10, []byte("newer state of Sent"))
	s.Put(ctx, "alice", "INBOX", 12, 1, val("new"))
	s.Flush()
	if v, ok := s.GetState(ctx, "alice", "Sent", 10); !ok || string(v) != "newer state of Sent" {
		t.Errorf("GetState(Sent) = %q, %v", v, ok)
	}
	if v, ok := s.GetState(ctx, "alice", "INBOX", 10); ok {
		t.Errorf("the state of the old UIDVALIDITY survived: %q", v)
	}
	if got, _ := rangeOf(1, 100); got != "[]" {
		t.Errorf("entries of the old UIDVALIDITY survived: %s", got)
	}
	s.PutState(ctx, "alice", "INBOX", 12, []byte("state 12"))
	s.Prune(ctx, "alice", "INBOX", 13, nil, 0)
	s.Flush()
	if v, ok := s.GetState(ctx, "alice", "INBOX", 12); ok {
		t.Errorf("Prune under a new UIDVALIDITY kept the old state %q", v)
	}
}

// TestRangeAndStateDisk: GetRange reads in UID order within one mailbox and UIDVALIDITY and says how far it
// covered; mailbox states survive a reopen, are replaced, and go with their UIDVALIDITY; neither a state nor
// a mailbox name is on disk in clear.
func TestRangeAndStateDisk(t *testing.T) {
	dir := t.TempDir()
	s := openDisk(t, dir, 0)
	testRangeAndState(t, s, func() *Store {
		s.Close()
		s = openDisk(t, dir, 0)
		return s
	})
	s.PutState(context.Background(), "alice", "Drafts", 1, []byte("Marmalade state"))
	s.Close()
	b, err := os.ReadFile(filepath.Join(dir, FileName("alice")))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Marmalade", "state of", "Drafts", "INBOX"} {
		if bytes.Contains(b, []byte(w)) {
			t.Errorf("the file holds %q", w)
		}
	}
}

func TestRangeAndStateMemory(t *testing.T) {
	s, _ := Open(Options{})
	testRangeAndState(t, s, nil)
}

// TestReadsWriteNothingBelowHalf: while the store is at most half full, reads (a header sync reads every
// entry) record no access, so they write nothing; above that the LRU order is kept (testLRU).
func TestReadsWriteNothingBelowHalf(t *testing.T) {
	ctx := context.Background()
	s := openDisk(t, t.TempDir(), 1<<20)
	defer s.Close()
	for uid := uint32(1); uid <= 50; uid++ {
		s.Put(ctx, "alice", "INBOX", 1, uid, val("value"))
	}
	s.Flush()
	d := s.users["alice"].(*diskStore)
	before := d.tick.Load()
	for uid := uint32(1); uid <= 50; uid++ {
		mustGet(t, s, "alice", "INBOX", 1, uid, "value")
	}
	s.GetRange(ctx, "alice", "INBOX", 1, 1, 100, func(uint32, []byte) {})
	s.Flush()
	if after := d.tick.Load(); after != before {
		t.Fatalf("reads moved %d entries in a store far from full", after-before)
	}
}
