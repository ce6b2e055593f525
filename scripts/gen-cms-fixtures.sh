#!/usr/bin/env bash
# Regenerates crypto/cms/testdata: TEST-ONLY keys and certificates (never use them for anything else) and
# `openssl cms -encrypt` fixtures for every EnvelopedData / AuthEnvelopedData variant OpenSSL 3 can make, each
# with the plaintext `openssl cms -decrypt` recovers from it (<name>.der -> <name>.out). X25519, X448 and
# ChaCha20-Poly1305, which OpenSSL 3.0 cannot produce, are built by the Go tests themselves.
# Usage: scripts/gen-cms-fixtures.sh   (needs openssl 3)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
td="$root/crypto/cms/testdata"
keys="$td/keys"
fx="$td/fixtures"
rm -rf "$keys" "$fx"
mkdir -p "$keys" "$fx"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

days=36500
# A test CA (EC P-256) signs every recipient certificate; leaf certificates carry a subjectKeyIdentifier.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$keys/ca.key" 2>/dev/null
openssl req -new -x509 -key "$keys/ca.key" -subj "/CN=cms test CA" -days $days -out "$keys/ca.pem" \
	-addext "subjectKeyIdentifier=hash" -addext "basicConstraints=critical,CA:TRUE"
cat >"$tmp/leaf.ext" <<'EXT'
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
basicConstraints=CA:FALSE
keyUsage=keyEncipherment,keyAgreement
extendedKeyUsage=emailProtection
EXT
serial=100
leaf() { # name, genpkey args...
	local name=$1
	shift
	openssl genpkey "$@" -out "$keys/$name.key" 2>/dev/null
	openssl pkey -in "$keys/$name.key" -pubout -out "$tmp/$name.pub"
	# X25519/X448 keys cannot sign their own request: the CA key signs it and -force_pubkey puts theirs in.
	openssl req -new -key "$keys/ca.key" -subj "/CN=cms test $name/emailAddress=$name@example.test" -out "$tmp/$name.csr"
	serial=$((serial + 1))
	openssl x509 -req -in "$tmp/$name.csr" -CA "$keys/ca.pem" -CAkey "$keys/ca.key" -force_pubkey "$tmp/$name.pub" \
		-set_serial $serial -days $days -extfile "$tmp/leaf.ext" -out "$keys/$name.pem" 2>/dev/null
}
leaf rsa -algorithm RSA -pkeyopt rsa_keygen_bits:2048
leaf rsa2 -algorithm RSA -pkeyopt rsa_keygen_bits:2048
leaf p256 -algorithm EC -pkeyopt ec_paramgen_curve:P-256
leaf p384 -algorithm EC -pkeyopt ec_paramgen_curve:P-384
leaf p521 -algorithm EC -pkeyopt ec_paramgen_curve:P-521
leaf x25519 -algorithm X25519
leaf x448 -algorithm X448

# Plaintexts: a small MIME entity, and a larger one so streamed (BER) output has several OCTET STRING segments.
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\nHello Bob, this is a CMS test message.\r\n' >"$td/small.txt"
{
	printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
	for i in $(seq 1 600); do printf 'line %04d: the quick brown fox jumps over the lazy dog\r\n' "$i"; done
} >"$td/large.txt"

# fixture NAME INPUT DECRYPT-AS cms-encrypt-args...: encrypt, then decrypt with openssl to record the plaintext.
fixture() {
	local name=$1 in=$2 as=$3
	shift 3
	openssl cms -encrypt -binary -outform DER -in "$td/$in" -out "$fx/$name.der" "$@"
	openssl cms -decrypt -binary -inform DER -in "$fx/$name.der" -recip "$keys/$as.pem" -inkey "$keys/$as.key" \
		-out "$fx/$name.out"
	cmp -s "$fx/$name.out" "$td/$in" || { echo "gen-cms-fixtures: $name does not round-trip" >&2; exit 1; }
}
k=$keys
# RSA PKCS #1 v1.5 key transport with each CBC content cipher (RFC 3370, RFC 3565).
fixture rsa-v15-aes128-cbc small.txt rsa -aes128 -recip $k/rsa.pem
fixture rsa-v15-aes192-cbc small.txt rsa -aes192 -recip $k/rsa.pem
fixture rsa-v15-aes256-cbc small.txt rsa -aes256 -recip $k/rsa.pem
fixture rsa-v15-3des-cbc small.txt rsa -des3 -recip $k/rsa.pem
fixture rsa-v15-aes256-cbc-keyid small.txt rsa -aes256 -keyid -recip $k/rsa.pem
fixture rsa-v15-aes256-cbc-stream large.txt rsa -aes256 -stream -recip $k/rsa.pem
fixture rsa-v15-aes128-cbc-stream-small small.txt rsa -aes128 -stream -recip $k/rsa.pem
# RSAES-OAEP (RFC 3560, RFC 4055): hashes, MGF1 hashes differing from the OAEP hash, a label.
oaep="-keyopt rsa_padding_mode:oaep"
fixture rsa-oaep-sha1-aes128-cbc small.txt rsa -aes128 -recip $k/rsa.pem $oaep
fixture rsa-oaep-sha256-aes256-cbc small.txt rsa -aes256 -recip $k/rsa.pem $oaep -keyopt rsa_oaep_md:sha256
fixture rsa-oaep-sha384-aes256-cbc small.txt rsa -aes256 -recip $k/rsa.pem $oaep -keyopt rsa_oaep_md:sha384
fixture rsa-oaep-sha512-aes256-cbc small.txt rsa -aes256 -recip $k/rsa.pem $oaep -keyopt rsa_oaep_md:sha512
fixture rsa-oaep-sha256-mgf1-sha1-aes128-cbc small.txt rsa -aes128 -recip $k/rsa.pem $oaep \
	-keyopt rsa_oaep_md:sha256 -keyopt rsa_mgf1_md:sha1
fixture rsa-oaep-sha512-mgf1-sha256-aes256-cbc small.txt rsa -aes256 -recip $k/rsa.pem $oaep \
	-keyopt rsa_oaep_md:sha512 -keyopt rsa_mgf1_md:sha256
fixture rsa-oaep-sha1-mgf1-sha384-3des-cbc small.txt rsa -des3 -recip $k/rsa.pem $oaep -keyopt rsa_mgf1_md:sha384
fixture rsa-oaep-sha256-label-aes128-cbc small.txt rsa -aes128 -recip $k/rsa.pem $oaep \
	-keyopt rsa_oaep_md:sha256 -keyopt rsa_oaep_label:0102030405060708
fixture rsa-oaep-sha256-keyid-stream large.txt rsa -aes256 -keyid -stream -recip $k/rsa.pem $oaep \
	-keyopt rsa_oaep_md:sha256
# ECDH ephemeral-static (RFC 5753): each KDF hash, each key wrap, each curve.
fixture ecdh-p256-default-aes128-cbc small.txt p256 -aes128 -recip $k/p256.pem
for md in sha1 sha224 sha256 sha384 sha512; do
	fixture ecdh-p256-$md-aes128wrap-aes128-cbc small.txt p256 -aes128 -recip $k/p256.pem -keyopt ecdh_kdf_md:$md \
		-aes128-wrap
done
fixture ecdh-p256-sha256-aes192wrap-aes192-cbc small.txt p256 -aes192 -recip $k/p256.pem -keyopt ecdh_kdf_md:sha256 -aes192-wrap
fixture ecdh-p256-sha256-aes256wrap-aes256-cbc small.txt p256 -aes256 -recip $k/p256.pem -keyopt ecdh_kdf_md:sha256 -aes256-wrap
fixture ecdh-p256-sha1-3deswrap-3des-cbc small.txt p256 -des3 -recip $k/p256.pem -des3-wrap
fixture ecdh-p256-sha256-3deswrap-aes128-cbc small.txt p256 -aes128 -recip $k/p256.pem -keyopt ecdh_kdf_md:sha256 -des3-wrap
fixture ecdh-p384-sha384-aes256wrap-aes256-cbc small.txt p384 -aes256 -recip $k/p384.pem -keyopt ecdh_kdf_md:sha384 -aes256-wrap
fixture ecdh-p521-sha512-aes256wrap-aes256-cbc small.txt p521 -aes256 -recip $k/p521.pem -keyopt ecdh_kdf_md:sha512 -aes256-wrap
fixture ecdh-p384-sha256-aes128wrap-keyid-stream large.txt p384 -aes128 -keyid -stream -recip $k/p384.pem \
	-keyopt ecdh_kdf_md:sha256 -aes128-wrap
# AuthEnvelopedData with AES-GCM (RFC 5083, RFC 5084).
fixture rsa-v15-aes128-gcm small.txt rsa -aes-128-gcm -recip $k/rsa.pem
fixture rsa-oaep-sha256-aes256-gcm small.txt rsa -aes-256-gcm -recip $k/rsa.pem $oaep -keyopt rsa_oaep_md:sha256
fixture rsa-v15-aes256-gcm-stream large.txt rsa -aes-256-gcm -stream -recip $k/rsa.pem
fixture ecdh-p256-sha256-aes256wrap-aes256-gcm small.txt p256 -aes-256-gcm -recip $k/p256.pem \
	-keyopt ecdh_kdf_md:sha256 -aes256-wrap
# Several recipients, RSA and EC mixed, by issuer+serial and SKI; each must be able to decrypt.
fixture multi-rsa-p256-p384-aes256-cbc small.txt p384 -aes256 -recip $k/rsa2.pem -recip $k/rsa.pem $oaep \
	-recip $k/p256.pem -keyopt ecdh_kdf_md:sha256 -recip $k/p384.pem
fixture multi-keyid-stream-aes128-gcm large.txt p256 -aes-128-gcm -keyid -stream -recip $k/rsa.pem \
	-recip $k/p256.pem -recip $k/p521.pem
for who in rsa p256 p521; do
	openssl cms -decrypt -binary -inform DER -in "$fx/multi-keyid-stream-aes128-gcm.der" -recip "$k/$who.pem" \
		-inkey "$k/$who.key" | cmp -s - "$td/large.txt"
done
# Not for us: encrypted only to rsa2 (ErrNoRecipient for rsa).
fixture only-rsa2 small.txt rsa2 -aes128 -recip $k/rsa2.pem
# SignedData (opaque) for SignedContent and the wrong-content-type checks.
openssl cms -sign -binary -nodetach -outform DER -in "$td/small.txt" -signer "$k/p256.pem" -inkey "$k/p256.key" \
	-out "$fx/signed-p256.der"
echo "gen-cms-fixtures: $(ls "$fx" | grep -c '\.der$') fixtures in $fx"
