package cms

import "testing"

// TestParseRecipientKey: ParseRecipientKey inverts RecipientID.Key and refuses anything else.
func TestParseRecipientKey(t *testing.T) {
	for _, s := range []string{"ski:0a0b", "iss:3000:1f"} {
		id, ok := ParseRecipientKey(s)
		if !ok || id.Key() != s {
			t.Errorf("ParseRecipientKey(%q) = %v, %v; Key() = %q", s, id, ok, id.Key())
		}
	}
	for _, s := range []string{"", "ski:", "ski:zz", "iss:3000", "iss:zz:1", "iss:30:xyz", "other:1"} {
		if _, ok := ParseRecipientKey(s); ok {
			t.Errorf("ParseRecipientKey(%q) ok", s)
		}
	}
}
