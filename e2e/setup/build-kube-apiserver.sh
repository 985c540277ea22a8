#!/usr/bin/env bash
# Builds kube-apiserver v1.20.2 from Debian bookworm's `kubernetes` source package
# (the full upstream tree with vendor/) and prints the binary's path. The binary is
# cached, so only the first run pays the ~8 minutes of compilation.
#
# Two fixes make the tree build with Debian's Go 1.19:
#   1. the vendored modern-go/reflect2 v1.0.1 crashes on Go >= 1.18, so it is
#      replaced by Debian's golang-github-modern-go-reflect2-dev (1.0.2);
#   2. the tarball lacks generated code: `make generated_files` (needs rsync).
# The build runs in GOPATH mode, as Kubernetes 1.20's own hack/ scripts do.
set -euo pipefail

VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE=${CILIUM_RS_CACHE:-/var/cache/cilium-rs}
OUT=$CACHE/kube-apiserver-v1.20.2
if [ -x "$OUT" ]; then echo "$OUT"; exit 0; fi

log() { echo "build-kube-apiserver: $*" >&2; }
mkdir -p "$CACHE"
export DEBIAN_FRONTEND=noninteractive

if ! grep -rqs '^Types: deb-src\|^deb-src' /etc/apt/sources.list.d/ /etc/apt/sources.list; then
  log "adding bookworm deb-src"
  cat > /etc/apt/sources.list.d/cilium-rs-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
log "installing build dependencies"
apt-get update -qq >&2
apt-get install -y -qq golang-1.19-go rsync golang-github-modern-go-reflect2-dev dpkg-dev >&2

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
log "downloading the source package"
apt-get source --download-only "kubernetes=$VERSION" >&2 || apt-get source --download-only kubernetes/bookworm >&2
tar xzf kubernetes_*.orig.tar.gz
SRC=$(ls -d "$WORK"/kubernetes-*/ | head -1); SRC=${SRC%/}
rm -rf "$SRC/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$SRC/vendor/github.com/modern-go/reflect2"

export PATH=/usr/lib/go-1.19/bin:$PATH GOCACHE=$WORK/gocache CGO_ENABLED=0
log "generating code (make generated_files)"
(cd "$SRC" && make generated_files >&2)
mkdir -p "$WORK/gopath/src/k8s.io"
ln -s "$SRC" "$WORK/gopath/src/k8s.io/kubernetes"
log "building kube-apiserver (several minutes)"
(cd "$WORK/gopath/src/k8s.io/kubernetes" && GOPATH=$WORK/gopath GO111MODULE=off \
  go build -ldflags "-s -w" -o "$OUT.tmp" ./cmd/kube-apiserver >&2)
mv "$OUT.tmp" "$OUT"
echo "$OUT"
