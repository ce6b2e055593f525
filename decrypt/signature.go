package decrypt

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/smimeproxy/smimeproxy/crypto/smime"
	"github.com/smimeproxy/smimeproxy/internal/mimepart"
	"github.com/smimeproxy/smimeproxy/keystore"
)

// Signature status on served messages (issue 11). Every candidate message whose signature layer counts under
// the EFAIL rule of package smime is verified once, when its served copy is built, and the outcome is put on
// top of the served copy as one SignatureField (smime.Signature.HeaderValue), e.g.
//
//	X-Smimeproxy-Signature: valid; signer=carol@example.org; cert=sha256:…; trust=chain
//	X-Smimeproxy-Signature: invalid; reason=untrusted
//
// The layers that count: the decrypted entity of a decrypted message (signed, then encrypted), else the top
// level of the message as stored (a multipart/signed, or opaque signed-data, over plaintext or over the
// ciphertext). The signed bytes are served unchanged, so a client that verifies by itself still can. The field
// is an X-Smimeproxy-* field, so forged copies from upstream are removed like the decryption status, and it is
// outside what the APPEND marker binds (servedDigest strips it).
//
// Trust anchors: the system roots (or Options.Roots) plus Options.CAs, and the certificates of the From
// address in the user's address book that the user marked trusted (keystore.TrustUser). The book's other
// certificates of that address are only used to find a signer whose certificate the message does not carry;
// such a signer is never trusted for being in the book. Nothing is fetched from the network.
//
// Harvesting (Options.NoHarvest off): when a signature verifies cryptographically, with a certificate valid now
// that names the From address and a digest that is not weak, the signer's certificate and its
// SMIMECapabilities are added to the user's address book (source harvested, trust chain when it verified to a
// root, else none; the book never lowers a trust). That happens off the FETCH path, in a bounded queue that
// drops work when full.

// SignatureField is the header field carrying the signature status of a served message.
const SignatureField = smime.SignatureHeader

// harvestQueueMax bounds the certificates waiting to be added to address books; more are dropped.
const harvestQueueMax = 64

// harvestTimeout bounds one address-book write.
const harvestTimeout = 30 * time.Second

// signatures verifies signatures for a Decrypter and harvests certificates.
type signatures struct {
	book    keystore.AddressBook
	roots   *x509.CertPool
	cas     []*x509.Certificate
	harvest bool
	log     *slog.Logger

	mu      sync.Mutex
	queue   []harvestJob
	running bool
	idle    *sync.Cond // signalled when the worker stops (tests wait for it)
}

type harvestJob struct {
	user string
	cert *x509.Certificate
	opts keystore.AddOptions
}

func newSignatures(o *Options, log *slog.Logger) *signatures {
	s := &signatures{book: o.Contacts, roots: o.Roots, cas: slices.Clone(o.CAs), harvest: !o.NoHarvest && o.Contacts != nil, log: log}
	s.idle = sync.NewCond(&s.mu)
	return s
}

// sigRun is the signature work for one message being served.
type sigRun struct {
	s     *signatures
	ctx   context.Context
	user  string // the key store's (and address book's) user
	from  string // the From address of the message, "" when none
	outer *smime.Signature
	// the address book's certificates of from, loaded once on first use
	loaded    bool
	bookErr   bool
	trusted   []*x509.Certificate // TrustUser
	others    []*x509.Certificate // the rest
	harvested bool
}

// startSignatures begins the signature work for msg (the message as stored upstream, still intact): it
// verifies msg's top-level signature, if any, now, as msg may be decrypted in place later. A message larger
// than limit is not verified.
func (d *Decrypter) startSignatures(ctx context.Context, user string, msg []byte, limit int64) *sigRun {
	r := &sigRun{s: d.sigs, ctx: ctx, user: user, from: fromOf(msg)}
	if int64(len(msg)) <= limit && signedTop(msg) {
		r.outer = r.verify(msg)
	}
	return r
}

// finish returns served with the signature field on top when a signature layer counts: the one under the
// decryption layer (decrypted, served holds it) or else the top-level one of the original message. ok is false
// when the address book could not be read, so that the outcome (maybe missing a user-trusted certificate) is
// not cached.
func (r *sigRun) finish(served []byte, decrypted bool) (out []byte, ok bool) {
	sig := r.outer
	if decrypted {
		if inner := r.verify(served); inner != nil {
			sig = inner
		}
	}
	if sig == nil {
		return served, true
	}
	r.s.log.Debug("signature", slog.String("user", r.user), slog.String("status", sig.HeaderValue()),
		slog.String("detail", sig.Detail))
	return withSignatureField(served, sig.HeaderValue()), !r.bookErr
}

// verify verifies the signature layer of entity (nil when it has none) and queues its certificate for
// harvesting.
func (r *sigRun) verify(entity []byte) *smime.Signature {
	r.load()
	opts := &smime.VerifyOptions{Roots: r.s.roots, CAs: r.s.cas, From: r.from, Trusted: r.trusted}
	sig := smime.Verify(entity, opts)
	if sig != nil && sig.Reason == smime.SigNoCertificate && len(r.others) > 0 {
		// The message does not carry the signer's certificate: look for it among the book's untrusted ones.
		opts.Trusted = append(slices.Clone(r.trusted), r.others...)
		if s2 := smime.Verify(entity, opts); s2 != nil && s2.Signed != nil {
			sig = s2
			if sig.Trust == smime.TrustAddressBook && !containsCert(r.trusted, sig.Cert) {
				sig.Trust = smime.TrustNone
				if sig.Valid {
					sig.Valid, sig.Reason, sig.Detail = false, smime.SigUntrusted, "signer certificate only known from the address book, not trusted"
				}
			}
		}
	}
	if sig != nil {
		r.queueHarvest(sig)
	}
	return sig
}

// load reads the address book's certificates of the From address once.
func (r *sigRun) load() {
	if r.loaded {
		return
	}
	r.loaded = true
	if r.s.book == nil || r.from == "" {
		return
	}
	addr, err := keystore.NormalizeAddress(r.from)
	if err != nil {
		return
	}
	cs, err := r.s.book.Certificates(r.ctx, r.user, addr)
	if err != nil {
		r.bookErr = true
		r.s.log.Warn("address book unavailable for signature verification", slog.String("user", r.user), slog.Any("err", err))
		return
	}
	for _, c := range cs {
		if c.Cert == nil {
			continue
		}
		if c.Trust == keystore.TrustUser {
			r.trusted = append(r.trusted, c.Cert)
		} else {
			r.others = append(r.others, c.Cert)
		}
	}
}

// queueHarvest queues sig's certificate for the user's address book when harvesting is on and the signature
// qualifies (see the top of this file).
func (r *sigRun) queueHarvest(sig *smime.Signature) {
	if !r.s.harvest || r.harvested || sig.Signed == nil || sig.Cert == nil {
		return
	}
	switch sig.Reason {
	case smime.SigAddressMismatch, smime.SigWeak, smime.SigExpired, smime.SigNotYetValid:
		return
	}
	addr, err := keystore.NormalizeAddress(r.from)
	if err != nil || !slices.Contains(keystore.CertAddresses(sig.Cert), addr) {
		return
	}
	trust := keystore.TrustNone
	if sig.Trust == smime.TrustChain {
		trust = keystore.TrustChain
	}
	r.harvested = true
	r.s.enqueue(harvestJob{user: r.user, cert: sig.Cert,
		opts: keystore.AddOptions{Trust: trust, Source: keystore.SourceHarvest, Capabilities: sig.Signed.CapabilitiesRaw}})
}

// enqueue adds j to the harvest queue, starting the worker when none runs; a full queue drops j.
func (s *signatures) enqueue(j harvestJob) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.queue {
		if q.user == j.user && bytes.Equal(q.cert.Raw, j.cert.Raw) {
			return
		}
	}
	if len(s.queue) >= harvestQueueMax {
		s.log.Debug("certificate harvesting queue full: dropped", slog.String("user", j.user))
		return
	}
	s.queue = append(s.queue, j)
	if !s.running {
		s.running = true
		go s.work()
	}
}

// work adds queued certificates to the address book until the queue is empty.
func (s *signatures) work() {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.running = false
			s.idle.Broadcast()
			s.mu.Unlock()
			return
		}
		j := s.queue[0]
		s.queue = s.queue[1:]
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), harvestTimeout)
		_, err := s.book.Add(ctx, j.user, j.cert, j.opts)
		cancel()
		if err != nil {
			s.log.Debug("certificate not harvested", slog.String("user", j.user), slog.Any("err", err))
		} else {
			s.log.Debug("certificate harvested", slog.String("user", j.user), slog.String("cert", keystore.Fingerprint(j.cert)),
				slog.String("trust", j.opts.Trust))
		}
	}
}

// waitHarvest blocks until the harvest queue is empty and no worker runs (for tests).
func (s *signatures) waitHarvest() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.running {
		s.idle.Wait()
	}
}

// WaitHarvest blocks until every certificate queued for harvesting so far has been written to the address book
// (or failed). Harvesting never delays serving; this is for tests and orderly shutdown.
func (d *Decrypter) WaitHarvest() { d.sigs.waitHarvest() }

func containsCert(l []*x509.Certificate, c *x509.Certificate) bool {
	return c != nil && slices.ContainsFunc(l, func(x *x509.Certificate) bool { return bytes.Equal(x.Raw, c.Raw) })
}

// fromOf returns the first address of msg's top-level From field (RFC 5322 section 3.6.2), or "".
func fromOf(msg []byte) string {
	val := mimepart.Get(msg, "From")
	if val == "" {
		return ""
	}
	list, err := mail.ParseAddressList(val)
	if err != nil || len(list) == 0 {
		return ""
	}
	return list[0].Address
}

// signedTop reports from the top-level Content-Type of msg alone whether it may be a signature layer: a
// multipart/signed (RFC 1847 section 2.1), or application/(x-)pkcs7-mime (or octet-stream smime.p7m) not
// labelled as enveloped data (RFC 8551 section 3.2.2). It keeps smime.Verify from decoding every encrypted
// message's ciphertext only to find it unsigned.
func signedTop(msg []byte) bool {
	ct := mimepart.Get(msg, "Content-Type")
	if ct == "" {
		return false
	}
	mt, params := mimepart.MediaType(ct, "")
	if mt == "" {
		return strings.Contains(strings.ToLower(ct), "pkcs7") // let smime.Verify decide
	}
	switch mt {
	case "multipart/signed":
		return true
	case "application/pkcs7-mime", "application/x-pkcs7-mime", "application/octet-stream":
		if mt == "application/octet-stream" && !strings.EqualFold(params["name"], "smime.p7m") {
			return false
		}
		st := strings.ToLower(params["smime-type"])
		return st != "enveloped-data" && st != "authenveloped-data" && st != "certs-only"
	}
	return false
}

// isSMIMESigned reports whether bs, a multipart/signed, is an S/MIME signature (RFC 8551 section 3.5.3): its
// protocol parameter, or else its second part, is application/(x-)pkcs7-signature.
func isSMIMESigned(bs *imap.BodyStructureMultiPart) bool {
	isSig := func(t string) bool {
		t = strings.ToLower(t)
		return t == "application/pkcs7-signature" || t == "application/x-pkcs7-signature"
	}
	if bs.Extended != nil {
		for k, v := range bs.Extended.Params {
			if strings.EqualFold(k, "protocol") {
				return isSig(v)
			}
		}
	}
	if len(bs.Children) != 2 {
		return false
	}
	sig, ok := bs.Children[1].(*imap.BodyStructureSinglePart)
	return ok && isSig(sig.Type+"/"+sig.Subtype)
}

// withSignatureField returns a copy of served with "X-Smimeproxy-Signature: value" as its first header field,
// or its second after the decryption status field that Process writes as the first line (clients and tools
// find that status on top), with the line ending of served's first line. Control characters in value (which
// comes partly from the message) are dropped so that it stays one header line. The APPEND marker is not
// affected: it binds the served bytes without X-Smimeproxy-* fields (servedDigest).
func withSignatureField(served []byte, value string) []byte {
	value = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, value)
	eol, at := "\r\n", 0
	i := bytes.IndexByte(served, '\n')
	if i >= 0 && (i == 0 || served[i-1] != '\r') {
		eol = "\n"
	}
	if i >= 0 && bytes.HasPrefix(served, []byte(StatusField+":")) {
		at = i + 1
	}
	out := make([]byte, 0, len(SignatureField)+2+len(value)+len(eol)+len(served))
	out = append(out, served[:at]...)
	out = append(out, SignatureField+": "+value+eol...)
	return append(out, served[at:]...)
}
