#!/usr/bin/env bash
# Installs everything `make test` and `make demo` need on a fresh Debian machine:
# the apt packages, and the Kubernetes binaries and e2e suite built from Debian's Kubernetes
# source (cached; see build-kubernetes.sh). Idempotent and quiet when all is present.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

packages=(etcd-server etcd-client clang llvm libbpf-dev protobuf-compiler libprotobuf-dev
          iproute2 iputils-ping netcat-openbsd openssl python3-venv util-linux
          iperf3 iptables
          # the real nodes: container runtime, images without a registry, the loopback plugin
          containerd runc busybox-static umoci containernetworking-plugins)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# The Debian etcd-server package starts a system etcd on 2379; tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now etcd >/dev/null 2>&1 || true; fi
pkill -x etcd >/dev/null 2>&1 || true

# The cluster's binaries, and e2e.test + agnhost (Kubernetes' own NetworkPolicy suite on
# the real nodes), from one source tree.
"$here/build-kubernetes.sh" cluster conformance >/dev/null

# Helm's own SDK (no helm binary is installable here) for the chart's lint and render.
helm_venv=${CILIUM_RS_CACHE:-/var/cache/cilium-rs}/helm-venv
if ! "$helm_venv/bin/python" -c 'import helm_python' >/dev/null 2>&1; then
  echo "install-deps: helm-python-sdk into $helm_venv" >&2
  mkdir -p "$(dirname "$helm_venv")"
  python3 -m venv "$helm_venv" >&2
  "$helm_venv/bin/pip" install -q --disable-pip-version-check helm-python-sdk==0.2.2 >&2
fi
