#!/usr/bin/env bash
# Builds Kubernetes v1.20.2 from Debian bookworm's `kubernetes` source package (the full
# upstream tree with vendor/), stamped v1.20.2 as Kubernetes' own release build does (so
# `kubectl version` and `cilium status` report the real version). Prints the directory
# holding each set's binaries. Two sets, each cached in its own directory; several sets
# named at once share one source tree and one Go build cache (what they have in common,
# client-go and the rest, compiles once):
#   cluster (default)  kube-apiserver, kubelet, kube-controller-manager, kube-scheduler,
#                      kube-proxy, in one `go build` (~4.5 min on 2 cores)
#   conformance        e2e.test (the upstream e2e suite, `go test -c ./test/e2e`) and agnhost
#                      (the suite's test image binary, from test/images/agnhost)
#
# Two fixes make the tree build with Debian's Go 1.19:
#   1. the vendored modern-go/reflect2 v1.0.1 crashes on Go >= 1.18, so it is
#      replaced by Debian's golang-github-modern-go-reflect2-dev (1.0.2);
#   2. the tarball lacks generated code: `make generated_files` (needs rsync).
# The build runs in GOPATH mode, as Kubernetes 1.20's own hack/ scripts do.
set -euo pipefail

VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE=${CILIUM_RS_CACHE:-/var/cache/cilium-rs}
COMMANDS=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy)
out_of() {
  case $1 in
    cluster) echo "$CACHE/kubernetes-v1.20.2" ;;
    conformance) echo "$CACHE/kubernetes-v1.20.2-conformance" ;;
    *) echo "build-kubernetes: unknown set '$1' (cluster or conformance)" >&2; exit 2 ;;
  esac
}
[ $# -gt 0 ] || set -- cluster
missing=()
for set in "$@"; do
  out=$(out_of "$set")
  [ -f "$out/.complete" ] || missing+=("$set")
done
if [ ${#missing[@]} -eq 0 ]; then
  for set in "$@"; do out_of "$set"; done
  exit 0
fi

log() { echo "build-kubernetes: $*" >&2; }
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

# The version stamp hack/lib/version.sh writes into a release build.
stamp=""
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
           k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=v1.20.2 -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2021-01-13T13:20:00Z"
done
export GOPATH=$WORK/gopath GO111MODULE=off
cd "$WORK/gopath/src/k8s.io/kubernetes"
for set in "${missing[@]}"; do
  out=$(out_of "$set")
  mkdir -p "$out.tmp"
  if [ "$set" = cluster ]; then
    log "building ${COMMANDS[*]} (many minutes)"
    targets=()
    for c in "${COMMANDS[@]}"; do targets+=("./cmd/$c"); done
    go build -ldflags "-s -w$stamp" -o "$out.tmp/" "${targets[@]}" >&2
  else
    log "building e2e.test and agnhost (many minutes)"
    go test -c -ldflags "-s -w$stamp" -o "$out.tmp/e2e.test" ./test/e2e >&2
    go build -ldflags "-s -w" -o "$out.tmp/agnhost" ./test/images/agnhost >&2
  fi
  rm -rf "$out"; mv "$out.tmp" "$out"
  touch "$out/.complete"
done
for set in "$@"; do out_of "$set"; done
