package vaultcfg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"

	"github.com/hashicorp/vault/api"
)

// Failure classes of a Vault call, wrapped (with the Vault address or path, never a token) by every error this
// package returns; test with errors.Is.
var (
	// ErrUnreachable: no HTTP answer from Vault (connection refused, DNS, TLS, timeout).
	ErrUnreachable = errors.New("vaultcfg: vault unreachable")
	// ErrSealed: Vault answered but is sealed (HTTP 503, "Vault is sealed").
	ErrSealed = errors.New("vaultcfg: vault is sealed")
	// ErrPermissionDenied: HTTP 403, the token's policies do not allow the operation (or the token is invalid).
	ErrPermissionDenied = errors.New("vaultcfg: permission denied")
	// ErrMountNotFound: the KV or Transit mount does not exist (or is of another type).
	ErrMountNotFound = errors.New("vaultcfg: mount not found")
	// ErrVault: any other error answer from Vault.
	ErrVault = errors.New("vaultcfg: vault error")
)

// vaultError is an error with a class (one of the Err* values above) and a single-line message.
type vaultError struct {
	class  error
	status int // HTTP status of a Vault answer, 0 when there was none
	msg    string
	cause  error // the underlying error, for errors.Is/As on context errors; never printed when it could be multi-line
}

func (e *vaultError) Error() string { return e.msg }

func (e *vaultError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.class, e.cause}
	}
	return []error{e.class}
}

// classify turns an error from the Vault client into a single-line error naming op (e.g. "read") and path (a
// Vault API path, never containing a secret) and wrapping its class. nil stays nil.
func (s *client) classify(err error, op, path string) error {
	if err == nil {
		return nil
	}
	var ve *vaultError
	if errors.As(err, &ve) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &vaultError{class: ErrUnreachable, msg: fmt.Sprintf("vaultcfg: %s %s: vault at %s did not answer in time", op, path, s.addr), cause: contextCause(err)}
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		detail := oneLine(re.Errors)
		switch {
		case re.StatusCode == 503 && strings.Contains(detail, "sealed"):
			return &vaultError{class: ErrSealed, msg: fmt.Sprintf("vaultcfg: %s %s: vault at %s is sealed", op, path, s.addr)}
		case re.StatusCode == 403:
			return &vaultError{class: ErrPermissionDenied, msg: fmt.Sprintf("vaultcfg: %s %s: permission denied (check the token's policies)", op, path)}
		case strings.Contains(detail, "no handler for route") || strings.Contains(detail, "unsupported path"):
			return &vaultError{class: ErrMountNotFound, msg: fmt.Sprintf("vaultcfg: %s %s: mount %q not found in vault at %s", op, path, s.mountOf(path), s.addr)}
		}
		if detail == "" {
			detail = fmt.Sprintf("HTTP %d", re.StatusCode)
		} else {
			detail = fmt.Sprintf("HTTP %d: %s", re.StatusCode, detail)
		}
		return &vaultError{class: ErrVault, status: re.StatusCode, msg: fmt.Sprintf("vaultcfg: %s %s: %s", op, path, detail)}
	}
	return &vaultError{class: ErrUnreachable, msg: fmt.Sprintf("vaultcfg: %s %s: vault at %s unreachable: %s", op, path, s.addr, netReason(err))}
}

func contextCause(err error) error {
	if errors.Is(err, context.Canceled) {
		return context.Canceled
	}
	return context.DeadlineExceeded
}

// netReason names why a request got no answer, in a few words.
func netReason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "cannot resolve host " + dnsErr.Name
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if ue := (*url.Error)(nil); errors.As(err, &ue) && ue.Err != nil {
		return oneLine([]string{ue.Err.Error()})
	}
	return oneLine([]string{err.Error()})
}

// oneLine joins Vault's error strings into one line, bounded in length.
func oneLine(msgs []string) string {
	s := strings.Join(msgs, "; ")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// mountOf returns the configured mount path is under, else its first segment.
func (s *client) mountOf(path string) string {
	for _, m := range s.mounts {
		if strings.HasPrefix(path, m+"/") {
			return m
		}
	}
	m, _, _ := strings.Cut(path, "/")
	return m
}
