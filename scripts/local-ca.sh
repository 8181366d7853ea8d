#!/usr/bin/env bash
# Makes a local certificate authority and a server certificate signed by it, for running the
# growth stage on one machine (`npm run stack` calls this) or a staging box without a public name.
# Production certificates come from Let's Encrypt via certbot (README "Growth stage: nginx and TLS").
#
#   scripts/local-ca.sh DIR NAME [SAN...]
#
#   DIR   output directory: ca.pem + ca.key (made once, reused), server.pem (leaf then CA) + server.key
#   NAME  the server's DNS name (the certificate's first subjectAltName)
#   SAN   more names or IP addresses, e.g. localhost 127.0.0.1
#
# Keys are ECDSA P-256; the leaf is valid for 90 days (Mozilla's recommended lifespan), the CA for
# 10 years. Clients trust the CA only: curl --cacert DIR/ca.pem, NODE_EXTRA_CA_CERTS=DIR/ca.pem.
set -euo pipefail

if [ "$#" -lt 2 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
dir=$1
name=$2
shift 2

mkdir -p "$dir"
umask 077

san="DNS:$name"
for extra in "$@"; do
  if [[ "$extra" =~ ^[0-9.]+$ || "$extra" == *:* ]]; then
    san="$san,IP:$extra"
  else
    san="$san,DNS:$extra"
  fi
done

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 -subj "/CN=Shipshape local CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.pem" 2>/dev/null
  echo "made a local CA: $dir/ca.pem"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$work/server.key"
openssl req -new -key "$work/server.key" -subj "/CN=$name" -out "$work/server.csr" 2>/dev/null
cat >"$work/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
EXT
openssl x509 -req -in "$work/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -CAserial "$work/ca.srl" -sha256 -days 90 -extfile "$work/ext.cnf" -out "$work/leaf.pem" 2>/dev/null
cat "$work/leaf.pem" "$dir/ca.pem" >"$work/server.pem"
mv "$work/server.key" "$dir/server.key"
mv "$work/server.pem" "$dir/server.pem"
chmod 644 "$dir/ca.pem" "$dir/server.pem"
echo "made a server certificate for $san: $dir/server.pem"
