package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smimeproxy/smimeproxy/internal/testenv"
	"github.com/smimeproxy/smimeproxy/metastore"
)

// serveChildEnv makes the test binary run 'smimeproxy serve' as a separate process (so that it can be killed
// with SIGKILL): its value is the JSON of the arguments; the child prints "LISTEN <addr>" once it listens.
const serveChildEnv = "SMIMEPROXY_TEST_SERVE_CHILD"

// metaSyncItems is a header sync that the metadata store answers: Thunderbird's items plus ENVELOPE and
// BODYSTRUCTURE.
const metaSyncItems = "(UID RFC822.SIZE FLAGS ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID Content-Type)])"

// TestServeKill9MidSync is the crash test of the metadata store through a real 'serve' process: a header sync
// of an encrypted mailbox is cut by kill -9 three times; each time the store's file opens again, and the next
// serve answers from what was committed before the kill (fewer decryptions than messages). Once complete, a
// sync from the store decrypts nothing and answers byte for byte what a proxy without a store answers. Last,
// every file in the proxy's whole working directory (store, cache and home directories, temporary files, its
// debug log) is searched for each plaintext word and header of the test mail: none may be there. Then
// `cache rotate-key` replaces the key and the next proxy rebuilds the store under it.
func TestServeKill9MidSync(t *testing.T) {
	if spec := os.Getenv(serveChildEnv); spec != "" {
		serveChild(t, spec)
		return
	}
	const n = 150
	w := &e2eWorld{t: t}
	w.d = testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"bob": "bob-pw"}})
	w.v = testenv.StartVault(t)
	w.vars = map[string]string{"VAULT_ADDR": w.v.Addr(), "VAULT_TOKEN": w.v.RootToken(), "HOME": t.TempDir()}
	w.keys("bob", cmsKeys+"rsa.key", cmsKeys+"rsa.pem")

	// Each message's plaintext carries words found nowhere else: in its body, an inner header field, an
	// attachment's file name and description (BODYSTRUCTURE).
	var msgs [][]byte
	var secrets []string
	for i := range n {
		words := []string{fmt.Sprintf("pulsar%04dbody", i), fmt.Sprintf("quasar%04dfile", i),
			fmt.Sprintf("nebula%04ddesc", i), fmt.Sprintf("X-Inner-Secret-%04d", i)}
		secrets = append(secrets, words...)
		entity := "X-Inner-Secret-" + fmt.Sprintf("%04d", i) + ": yes\r\n" +
			"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
			"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe word is " + words[0] + ".\r\n" +
			"--b1\r\nContent-Type: application/pdf; name=\"" + words[1] + ".pdf\"\r\nContent-Description: " + words[2] +
			"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
		outer := strings.Replace(e2eOuter, "Subject: e2e test", fmt.Sprintf("Subject: note %d", i), 1)
		msgs = append(msgs, p7mMessage(outer, envelopeTo(t, []byte(entity), cmsKeys+"rsa.pem", "aes-256-cbc"), "enveloped-data"))
	}
	w.d.SeedMaildir("bob", "INBOX", msgs)

	work := t.TempDir() // the proxy's whole working directory
	for _, d := range []string{"home", "cache", "tmp"} {
		if err := os.Mkdir(filepath.Join(work, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	metaDir := filepath.Join(work, "cache", "smimeproxy", "metadata")
	logFile, err := os.Create(filepath.Join(work, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	start := func(store bool) (addr, metrics string, cmd *exec.Cmd) {
		t.Helper()
		metrics = freeLoopback(t)
		args := []string{"--listen", "127.0.0.1:0", "--upstream", "imaps://" + w.d.TLSAddr(), "--upstream-ca-file",
			w.d.CAFile(), "--log-level", "debug", "--metrics-listen", metrics, "--metadata-store", metaDir}
		if !store {
			args[len(args)-1] = ""
		}
		spec, _ := json.Marshal(args)
		cmd = exec.Command(os.Args[0], "-test.run=^TestServeKill9MidSync$")
		cmd.Dir = work
		cmd.Env = []string{serveChildEnv + "=" + string(spec), "PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Join(work, "home"),
			"XDG_CACHE_HOME=" + filepath.Join(work, "cache"), "TMPDIR=" + filepath.Join(work, "tmp"),
			"VAULT_ADDR=" + w.v.Addr(), "VAULT_TOKEN=" + w.v.RootToken()}
		cmd.Stderr = logFile
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		lines := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if a, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
					lines <- a
				}
			}
			close(lines)
		}()
		select {
		case a, ok := <-lines:
			if !ok {
				t.Fatalf("serve child exited before listening; log:\n%s", tailString(readFileString(t, logFile.Name()), 4096))
			}
			return a, metrics, cmd
		case <-time.After(30 * time.Second):
			t.Fatal("serve child did not listen within 30 s")
		}
		return
	}
	decrypted := func(metrics string) float64 {
		return metricValue(t, httpGet(t, "http://"+metrics+"/metrics"), "smimeproxy_messages_decrypted_total")
	}
	kill := func(cmd *exec.Cmd) {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
	}

	// Three syncs cut by kill -9 once a third of the mailbox has been answered. The file must open after each.
	total := 0.0
	for round := range 3 {
		addr, metrics, cmd := start(true)
		got := syncUntil(t, addr, n/3)
		dec := decrypted(metrics)
		total += dec
		kill(cmd)
		st, err := metastore.StatFile(metaDir, "bob")
		if err != nil {
			t.Fatalf("round %d: the store does not open after kill -9: %v", round, err)
		}
		t.Logf("round %d: %d FETCH responses read, %v decrypted, then kill -9; the store holds %d entries", round, got, dec, st.Entries)
		if round == 2 && st.Entries == 0 {
			t.Fatal("three cut syncs left no entry committed")
		}
	}

	// A complete sync: what was committed before the kills is used.
	addr, metrics, cmd := start(true)
	first := runPy(t, addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1:*", metaSyncItems)})
	dec := decrypted(metrics)
	if dec >= n {
		t.Errorf("after three cut syncs the complete sync decrypted %v of %d messages: nothing came from the store", dec, n)
	}
	// Full messages: each is served decrypted, its own plaintext in it.
	bodies := runPy(t, addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1:*", "(BODY.PEEK[HEADER.FIELDS (Subject)] BODY.PEEK[TEXT])")})
	if len(bodies) != 2 || len(bodies[1].Data) == 0 {
		t.Fatalf("body fetch: %+v", bodies)
	}
	seen := 0
	for _, m := range bodies[1].messages() {
		s := string(m)
		_, rest, ok := strings.Cut(s, "Subject: note ")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, "\r\n")
		i, err := strconv.Atoi(strings.TrimSpace(num))
		if err != nil || i < 0 || i >= n {
			t.Fatalf("unexpected subject in %.200q", s)
		}
		if !strings.Contains(s, fmt.Sprintf("pulsar%04dbody", i)) || strings.Contains(s, "application/pkcs7-mime") {
			t.Errorf("message %d not served decrypted with its own text: %.300q", i, s)
		}
		seen++
	}
	if seen != n {
		t.Errorf("%d of %d messages seen in the body fetch", seen, n)
	}
	// Stopped cleanly (SIGTERM: the store's queue is written), then a sync from the complete store.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	addr, metrics, cmd = start(true)
	fromStore := runPy(t, addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1:*", metaSyncItems)})
	if dec := decrypted(metrics); dec != 0 {
		t.Errorf("a header sync from the complete store decrypted %v messages, want 0", dec)
	}
	kill(cmd)
	addr, _, cmd = start(false)
	fresh := runPy(t, addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1:*", metaSyncItems)})
	kill(cmd)
	if len(fresh) != 2 || len(fresh[1].messages()) != n {
		t.Fatalf("sync without a store: %d results, %d messages", len(fresh), len(fresh[len(fresh)-1].messages()))
	}
	if !reflect.DeepEqual(fromStore, fresh) {
		t.Errorf("the sync from the store differs from a proxy without one:\nstore: %.600q\nfresh: %.600q", fromStore[1].messages(), fresh[1].messages())
	}
	if !reflect.DeepEqual(first, fresh) {
		t.Errorf("the sync after the kills differs from a proxy without a store:\nafter: %.600q\nfresh: %.600q", first[1].messages(), fresh[1].messages())
	}
	if m := fresh[1].messages(); !strings.Contains(string(m[7]), "quasar0007file") || !strings.Contains(string(m[7]), "nebula0007desc") {
		t.Fatalf("the sync does not show the decrypted structure: %.600q", m[7])
	}

	// No plaintext anywhere in the working directory.
	files := 0
	err = filepath.WalkDir(work, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("%s holds the plaintext %q", strings.TrimPrefix(path, work), s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Two entries a message: its metadata and its searchable text.
	if st, err := metastore.StatFile(metaDir, "bob"); err != nil || st.Entries != 2*n {
		t.Errorf("the store: %+v, %v; want %d entries", st, err, 2*n)
	}
	if files < 2 {
		t.Errorf("only %d files in the working directory: the store and log were expected", files)
	}

	// Key rotation: refused while a proxy holds the file; afterwards the store starts afresh under a new key.
	addr, _, cmd = start(true)
	runPy(t, addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1", "(BODYSTRUCTURE)")}) // opens the store
	env, out, errb := demoEnv(w.vars)
	if code := runMain(context.Background(), env, []string{"cache", "rotate-key", "--user", "bob", "--metadata-store", metaDir}); code == exitOK {
		t.Errorf("cache rotate-key succeeded while serve holds the store: %s", out)
	} else if !strings.Contains(errb.String(), "in use by a running proxy") {
		t.Errorf("cache rotate-key while serve holds the store: %q, want it to say the store is in use", errb)
	}
	kill(cmd)
	oldKey := w.v.MustRequest("GET", "secret/data/smimeproxy/.proxy/metastore-keys/bob", "")
	env, out, errb = demoEnv(w.vars)
	if code := runMain(context.Background(), env, []string{"cache", "rotate-key", "--user", "bob", "--metadata-store", metaDir}); code != exitOK {
		t.Fatalf("cache rotate-key = %d: %s", code, errb)
	}
	w.checkSecrets("cache rotate-key", out.String()+errb.String())
	if newKey := w.v.MustRequest("GET", "secret/data/smimeproxy/.proxy/metastore-keys/bob", ""); string(newKey) == string(oldKey) {
		t.Error("cache rotate-key left the key in Vault unchanged")
	}
	if _, err := metastore.StatFile(metaDir, "bob"); !os.IsNotExist(err) {
		t.Errorf("the store file survived the rotation: %v", err)
	}
	addr, metrics, cmd = start(true)
	again := runPy(t, addr, "bob", "bob-pw", []pyOp{opSelect("INBOX", true), opFetch("1:*", metaSyncItems)})
	if dec := decrypted(metrics); dec != n {
		t.Errorf("the first sync after a rotation decrypted %v messages, want all %d", dec, n)
	}
	if !reflect.DeepEqual(again, fresh) {
		t.Error("the sync after a rotation differs from a proxy without a store")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if st, err := metastore.StatFile(metaDir, "bob"); err != nil || st.Entries != 2*n {
		t.Errorf("the store rebuilt under the new key: %+v, %v; want %d entries", st, err, 2*n)
	}
}

// syncUntil logs in as bob at addr, starts the header sync and returns once k FETCH responses have been read,
// leaving the command running.
func syncUntil(t *testing.T, addr string, k int) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "a LOGIN bob bob-pw\r\nb EXAMINE INBOX\r\nc UID FETCH 1:* %s\r\n", metaSyncItems)
	got := 0
	for got < k {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("sync cut short after %d responses: %v", got, err)
		}
		if strings.HasPrefix(line, "a NO") || strings.HasPrefix(line, "b NO") || strings.HasPrefix(line, "c ") {
			t.Fatalf("sync: %q after %d responses", line, got)
		}
		if strings.HasPrefix(line, "* ") && strings.Contains(line, " FETCH (") {
			got++
		}
		// A literal's bytes are skipped so that their lines are not read as responses.
		if i := strings.LastIndexByte(line, '{'); i >= 0 && strings.HasSuffix(line, "}\r\n") {
			if size, err := strconv.Atoi(line[i+1 : len(line)-3]); err == nil {
				if _, err := r.Discard(size); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return got
}

// serveChild is the child side of TestServeKill9MidSync: 'smimeproxy serve' with the arguments in spec, until
// it is killed.
func serveChild(t *testing.T, spec string) {
	var args []string
	if err := json.Unmarshal([]byte(spec), &args); err != nil {
		t.Fatal(err)
	}
	env := &cmdEnv{stdin: strings.NewReader(""), stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	fset, sf := newServeFlagSet()
	sf.onListen = func(a string) { fmt.Printf("LISTEN %s\n", a) }
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		<-ch
		stop()
	}()
	if code := sf.run(ctx, env, fset, args); code != exitOK {
		t.Fatalf("serve exited %d", code)
	}
}

func readFileString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
