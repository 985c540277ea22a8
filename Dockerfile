# The cilium-rs image: cilium-operator, cilium-agent, cilium-cni and the cilium CLI, and the eBPF objects
# (compiled by clang in the agent's build and also embedded in the agent binary; the copies
# under /var/lib/cilium/bpf are for inspection with bpftool/llvm-objdump).
#   docker build -t ghcr.io/cilium-rs/cilium-rs:0.1.0 .     (or `make image`)
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cilium-operator -p cilium-agent -p cilium-cni -p cilium-cli \
 && mkdir -p /out/bin /out/bpf \
 && cp target/release/cilium-operator target/release/cilium-agent target/release/cilium-cni target/release/cilium /out/bin/ \
 && cp "$(dirname "$(ls -t target/release/build/cilium-datapath-*/out/bpf_lxc.o | head -1)")"/*.o /out/bpf/

FROM docker.io/library/debian:bookworm-slim
# ca-certificates for an etcd or apiserver whose CA is a public one; the agent needs no
# other tool (netlink and bpf(2) are spoken directly).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/bpf/ /var/lib/cilium/bpf/
COPY node-agent/cni/05-cilium.conflist /etc/cilium/05-cilium.conflist
# The chart sets the command of each container (cilium-agent, cilium-operator).
CMD ["cilium-agent", "--help"]
