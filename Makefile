# The commands a user types. `make test` runs everything (unit, e2e on real etcd and
# kube-apiserver, formatting and lints) and installs what it needs first.
CARGO ?= cargo

.PHONY: all deps build cni-static test unit e2e conformance chaos bench lint lint-chart crds cluster-in-a-box demo demo-clustermesh demo-kubelet image clean

all: build

## deps: apt packages and the kube-apiserver build (cached; fast when already present)
deps:
	@bash e2e/setup/install-deps.sh

build: deps cni-static
	$(CARGO) build --workspace --all-targets

## cni-static: cilium-cni linked statically (glibc's static-pie), the one the image ships:
## it runs on any host whatever its libc. Its own target dir part, so the rest is untouched.
CNI_TARGET = x86_64-unknown-linux-gnu
cni-static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build -p cilium-cni --target $(CNI_TARGET)

## test: everything, e2e included. Where the machine has cargo-nextest the
## tests of different binaries run side by side (.config/nextest.toml keeps the real-node
## ones to one at a time); without it, cargo test runs them one binary after another.
test: deps lint cni-static
	$(CARGO) build --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) nextest run --workspace" && $(CARGO) nextest run --workspace && \
		echo "$(CARGO) test --workspace --doc" && $(CARGO) test --workspace --doc; \
	else \
		echo "$(CARGO) test --workspace (no cargo-nextest here)" && $(CARGO) test --workspace; \
	fi

## unit: tests that need no servers (the library crates)
unit:
	$(CARGO) test -p cilium-crds -p cilium-identity -p cilium-kvstore -p cilium-datapath \
		-p cilium-agent -p cilium-agent-api -p cilium-cni -p cilium-netdev -p cilium-policy --lib
	$(CARGO) test -p cilium-operator --lib
	$(CARGO) test -p cilium-cli --bins

## e2e: the end-to-end tests on the cluster-in-a-box
e2e: deps cni-static
	$(CARGO) build --workspace --bins
	$(CARGO) test -p e2e

## conformance: Kubernetes' whole v1.20 NetworkPolicy e2e suite (e2e.test) on the real nodes;
## `make test` runs four of its specs
conformance: deps cni-static
	$(CARGO) build --workspace --bins
	CILIUM_RS_CONFORMANCE=full $(CARGO) test -p e2e --test conformance -- --nocapture

## chaos: faults with numbers (leader kills, apiserver and etcd restarts under churn, agent
## SIGKILL with 500 endpoints; prints a table, asserts nothing) and the generated-input
## properties run long; CHAOS=leader|apiserver|etcd|kvstore|agent|flood runs one scenario
CHAOS_CASES ?= 20000
chaos: deps cni-static
	$(CARGO) build --workspace --bins
	PROPTEST_CASES=$(CHAOS_CASES) $(CARGO) test -p cilium-policy --test generated_policies
	PROPTEST_CASES=$(CHAOS_CASES) $(CARGO) test -p cilium-cni --test generated_requests
	PROPTEST_CASES=$(CHAOS_CASES) $(CARGO) test -p cilium-agent --lib generated
	PROPTEST_CASES=$(CHAOS_CASES) $(CARGO) test -p e2e --test generated_api
	./target/debug/chaos $(CHAOS)

## bench: the speed and memory numbers (release build, own cluster-in-a-box; prints, never asserts)
bench: deps
	$(CARGO) build --release --workspace --bins
	./target/release/bench $(BENCH)

lint: lint-chart
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

HELM_PYTHON ?= $${CILIUM_RS_CACHE:-/var/cache/cilium-rs}/helm-venv/bin/python

## lint-chart: `helm lint --strict` of the chart, default values and the mesh example (Helm's SDK)
lint-chart: deps
	$(HELM_PYTHON) charts/tools/helm.py lint charts/cilium
	$(HELM_PYTHON) charts/tools/helm.py lint charts/cilium -f charts/cilium/ci/clustermesh-ipv6-etcd-values.yaml

## image: the container image of every binary (needs a Docker engine; not built in CI)
image:
	docker build -t ghcr.io/cilium-rs/cilium-rs:$$(sed -n 's/^appVersion: "\(.*\)"/\1/p' charts/cilium/Chart.yaml) .

## crds: regenerate the CRD YAML from the Rust types, for crds/ and the chart (commit the result)
crds:
	$(CARGO) run -q -p cilium-crds --bin crdgen > crds/yaml/cilium-crds.yaml
	cp crds/yaml/cilium-crds.yaml charts/cilium/crds/cilium-crds.yaml

## cluster-in-a-box: etcd + kube-apiserver + CRDs + operator + two agent nodes, until Ctrl-C
cluster-in-a-box: deps
	$(CARGO) build -q --workspace --bins
	./target/debug/cluster-in-a-box

## demo: the protected-db scenario on cluster-in-a-box; DEMO_FLAGS=--exit stops after printing
demo: deps
	$(CARGO) build -q --workspace --bins
	./target/debug/demo $(DEMO_FLAGS)

## demo-clustermesh: two meshed clusters-in-a-box, the clustermesh document's scenario; DEMO_FLAGS=--exit stops after printing
demo-clustermesh: deps
	$(CARGO) build -q --workspace --bins
	./target/debug/demo-clustermesh $(DEMO_FLAGS)

## demo-kubelet: the protected-db story on real nodes (kubelet + containerd, the chart as pods); DEMO_FLAGS=--exit stops after printing
demo-kubelet: deps cni-static
	$(CARGO) build -q --workspace --bins
	./target/debug/demo-kubelet $(DEMO_FLAGS)

clean:
	$(CARGO) clean
