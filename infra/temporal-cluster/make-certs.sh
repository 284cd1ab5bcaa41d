#!/usr/bin/env bash
# The certificates of a Temporal cluster with mTLS, made with openssl (EC P-256, SHA-256), kept in DIR:
#   ca.pem / ca.key                     the cluster's CA (clients trust the server by it, the server its clients)
#   frontend.pem / .key                 the frontend's server certificate (DNS localhost, IP 127.0.0.1)
#   internode.pem / .key                history, matching, worker services among themselves (server and client)
#   system-worker.pem / .key            the server's own system worker, a client of the frontend
#   client.pem / .key                   a client certificate for workers and operators (CN fleet-upgrade)
# Usage: make-certs.sh DIR                     every file above that is missing (a new CA makes all anew)
#        make-certs.sh DIR --client NAME       one more client certificate NAME.pem / NAME.key of that CA
#        make-certs.sh DIR --ca-only           just a CA (e.g. another, untrusted one)
# Keys are 0600 in a 0700 folder.
set -euo pipefail
dir="$1"; shift
mkdir -p "$dir"; chmod 0700 "$dir"
umask 077
days=825

ca() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key"
  openssl req -x509 -new -sha256 -key "$dir/ca.key" -days 3650 -subj "/O=fleet-upgrade/CN=fleet-upgrade temporal CA $(date +%s)" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$dir/ca.pem" 2>/dev/null
}

# leaf NAME CN EKU [SAN]
leaf() {
  local name=$1 cn=$2 eku=$3 san=${4:-}
  local ext="$dir/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    echo "authorityKeyIdentifier=keyid"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } > "$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name.key"
  openssl req -new -sha256 -key "$dir/$name.key" -subj "/O=fleet-upgrade/CN=$cn" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -sha256 -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days $days -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$dir/$name.csr" "$ext"
}

case "${1:-}" in
  --ca-only) [ -f "$dir/ca.pem" ] || ca; exit 0 ;;
  --client) [ -f "$dir/$2.pem" ] || leaf "$2" "$2" clientAuth; exit 0 ;;
esac

if [ ! -f "$dir/ca.pem" ] || [ ! -f "$dir/ca.key" ]; then
  rm -f "$dir"/*.pem "$dir"/*.key
  ca
fi
[ -f "$dir/frontend.pem" ] || leaf frontend localhost serverAuth "DNS:localhost,IP:127.0.0.1"
[ -f "$dir/internode.pem" ] || leaf internode localhost "serverAuth,clientAuth" "DNS:localhost,IP:127.0.0.1"
[ -f "$dir/system-worker.pem" ] || leaf system-worker temporal-system-worker clientAuth
[ -f "$dir/client.pem" ] || leaf client fleet-upgrade clientAuth
