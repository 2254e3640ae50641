#!/bin/sh
# A private CA and a server certificate for Mosquitto's TLS listener (self-signed: for a park's
# own network; use your organisation's CA where there is one).
#   deploy/mosquitto/make-certs.sh OUT_DIR HOSTNAME [IP]
# writes OUT_DIR/ca.crt (give it to every client: PARKMON_MQTT_TLS_CA), ca.key (keep offline),
# server.crt, server.key (mode 0600). Needs openssl.
set -eu
out=${1:?usage: make-certs.sh OUT_DIR HOSTNAME [IP]}
host=${2:?usage: make-certs.sh OUT_DIR HOSTNAME [IP]}
ip=${3:-}
mkdir -p "$out"
cd "$out"
umask 077
openssl req -x509 -newkey rsa:3072 -nodes -days 1825 -subj "/CN=parkmon MQTT CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=$host" -keyout server.key -out server.csr 2>/dev/null
san="subjectAltName=DNS:$host"
[ -n "$ip" ] && san="$san,IP:$ip"
printf '%s\nextendedKeyUsage=serverAuth\n' "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
  -extfile server.ext -out server.crt 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 0644 ca.crt server.crt
echo "$out: ca.crt ca.key server.crt server.key (CN=$host${ip:+, IP $ip})"
