#!/usr/bin/env bash
# A private CA and a coordinator certificate signed by it, for `lehr coordinator --tls-cert
# server.pem --tls-key server.key` and clients' `--tls-ca ca.pem` (or LEHR_TLS_CA).
#   deploy/tls/make-certs.sh OUT_DIR HOST [HOST...]
# Every HOST (a DNS name or an IP address) goes into the certificate's subjectAltName: name
# every address clients dial. The server certificate says CA:FALSE, as rustls requires (a
# plain `openssl req -x509` certificate is a CA and is refused as a server's). Keys are P-256,
# mode 0600; the CA key stays in OUT_DIR: keep it or delete it.
set -euo pipefail
OUT=${1:?usage: make-certs.sh OUT_DIR HOST [HOST...]}
shift
[ $# -ge 1 ] || { echo "name at least one host the coordinator is reached at" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl is required (apt-get install openssl)" >&2; exit 2; }
mkdir -p "$OUT"
umask 077
san=""
for h in "$@"; do
  if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done
san=${san%,}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=lehr private CA" -keyout "$OUT/ca.key" -out "$OUT/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
  -keyout "$OUT/server.key" -out "$OUT/server.csr" 2>/dev/null
openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" -CAcreateserial -days 825 \
  -out "$OUT/server.pem" -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san") 2>/dev/null
rm -f "$OUT/server.csr" "$OUT/ca.srl"
chmod 644 "$OUT/ca.pem" "$OUT/server.pem"
echo "$OUT/ca.pem (clients: --tls-ca), $OUT/server.pem + $OUT/server.key (coordinator: --tls-cert/--tls-key) for $san"
