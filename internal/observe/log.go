package observe

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// LogOptions configure NewLogger.
type LogOptions struct {
	// Format is "text" (default; logfmt-like key=value lines) or "json" (one JSON object per line).
	Format string
	// Level is "debug", "info" (default), "warn" or "error", case-insensitive.
	Level string
}

// ParseLevel parses a log level name; it fails on anything but debug, info, warn(ing) or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("observe: unknown log level %q (want debug, info, warn or error)", s)
}

// NewLogger returns a logger writing to w in the given format. Attributes whose key names a secret (see
// SecretKey) are written as "***" whatever their value, as a second line of defence behind Secret. It fails
// on an unknown format or level.
func NewLogger(w io.Writer, o LogOptions) (*slog.Logger, error) {
	level, err := ParseLevel(o.Level)
	if err != nil {
		return nil, err
	}
	ho := &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}
	switch strings.ToLower(o.Format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("observe: unknown log format %q (want text or json)", o.Format)
}

// Secret is a string that must never appear in logs or error output: tokens, passwords, AppRole secret ids,
// key material. Logged through slog, printed with fmt (%s, %v, %q, %#v) or marshalled as text or JSON it
// shows as "***"; Reveal returns the value for the one place that needs it.
type Secret string

// Redacted is what a Secret looks like in output.
const Redacted = "***"

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// String implements fmt.Stringer.
func (s Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return `"` + Redacted + `"` }

// Format implements fmt.Formatter so that every verb, including %x and %q, prints the redaction.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", Redacted)
		return
	}
	io.WriteString(f, Redacted)
}

// MarshalText implements encoding.TextMarshaler (and so JSON encoding).
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// secretKeys are attribute keys (or key suffixes) whose values are always redacted.
var secretKeys = []string{"password", "passwd", "token", "secret", "secret_id", "secret-id", "private_key", "key_material", "authorization", "cookie"}

// SecretKey reports whether an attribute key names a secret (case-insensitive, matching a whole key or its last
// "_"/"-"/"."-separated part, e.g. "vault_token", "Password").
func SecretKey(key string) bool {
	k := strings.ToLower(key)
	for _, s := range secretKeys {
		if k == s || strings.HasSuffix(k, "_"+s) || strings.HasSuffix(k, "-"+s) || strings.HasSuffix(k, "."+s) {
			return true
		}
	}
	return false
}

func redactAttr(groups []string, a slog.Attr) slog.Attr {
	if SecretKey(a.Key) && a.Value.Kind() != slog.KindGroup {
		a.Value = slog.StringValue(Redacted)
	}
	return a
}

// Discard is a logger that drops everything, for callers given no logger.
var Discard = slog.New(slog.DiscardHandler)
