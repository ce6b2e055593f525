package smime

import (
	"bytes"
	"testing"
)

// An original holding the delimiter of the derived boundary gets another boundary, and the wrapper still
// parses into the explanation and the original byte for byte.
func TestBoundaryAvoidsCollision(t *testing.T) {
	base := undecryptableBoundaryPrefix + "0123"
	orig := []byte("Content-Type: application/pkcs7-mime\r\n\r\n--" + base + "\r\n--" + base + "-1--\r\n")
	if got := boundaryAvoiding(orig, base); got != base+"-2" {
		t.Fatalf("boundaryAvoiding = %q, want %q", got, base+"-2")
	}
	if got := boundaryAvoiding([]byte("no delimiter here"), base); got != base {
		t.Errorf("boundaryAvoiding without a collision = %q, want the base %q", got, base)
	}
	served := explainUndecryptable(orig, ReasonCorrupt, nil)
	b := wrapperBoundary(orig)
	if bytes.Contains(orig, []byte("--"+b)) {
		t.Fatalf("wrapperBoundary %q occurs in the original", b)
	}
	top := parseEntity(served)
	parts := multipartParts(top.body, b, 2)
	if len(parts) != 2 || !bytes.Equal(parts[1], orig) {
		t.Fatalf("wrapper parts = %d, second %q, want the original", len(parts), parts)
	}
}
