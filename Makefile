# rundmc — see README.md. Every target installs what is missing first.
SHELL := /bin/bash
ROOTFS ?= $(CURDIR)/target/rootfs/busybox
# The image the example manifests name.
IMAGE ?= /var/lib/rundmc/rootfs/busybox
STATE ?= $(CURDIR)/state
DEMO_CGROUP ?= rundmc-demo
export RUNDMC_TEST_ROOTFS := $(ROOTFS)

.PHONY: all deps rootfs build build-debug test lint soak run clean-run bench confinement image clean

all: build

deps:
	@scripts/deps.sh

rootfs: deps
	@scripts/mkrootfs.sh $(ROOTFS)

build: deps
	cargo build --release --workspace --bins

build-debug: deps
	cargo build --workspace --bins

# Formatting, then clippy with the workspace's lints ([workspace.lints] in
# Cargo.toml) as errors.
lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The lints, then unit tests, then integration tests against real runc (as
# root). One build: the test-unwind profile (Cargo.toml) compiles every
# dependency once for the tests and the binaries they run.
TEST_PROFILE := --profile test-unwind
test: rootfs lint
	cargo test --workspace --no-fail-fast $(TEST_PROFILE)

# A long seeded storm (tests/storm.rs): churn under runtime faults and agent
# SIGKILLs, then the invariants. SEED replays one; ACTIONS lengthens it.
SEED ?= 3
ACTIONS ?= 600
soak: rootfs
	RUNDMC_STORM_SEED=$(SEED) RUNDMC_STORM_ACTIONS=$(ACTIONS) \
		cargo test --workspace $(TEST_PROFILE) --test storm -- --nocapture

# The agent on manifests/examples, state under ./state. Ctrl-C stops the
# agent and leaves the containers running; `make clean-run` removes them.
run: build
	@scripts/mkrootfs.sh $(IMAGE)
	@mkdir -p $(STATE)
	@scripts/mkdemo-image.sh $(IMAGE) $(STATE)/demo-image.tar
	@target/release/rundmc image import $(STATE)/demo-image.tar --image-store $(STATE)/images >/dev/null
	@echo "rundmc agent on manifests/examples (Ctrl-C stops the agent; containers keep running)"
	@echo "  status:   $(STATE)/run/status/<name>.yaml"
	@echo "  events:   $(STATE)/run/events.jsonl"
	@echo "  logs:     $(STATE)/depot/<name>/processes/main-<n>/output.log"
	@echo "  runc:     runc --root $(STATE)/runc list"
	@echo "  images:   target/release/rundmc image ls --image-store $(STATE)/images"
	@echo "  network:  each container's podIP in its status (bridge rundmc0, 10.89.0.0/24); web on localhost:18080"
	@echo "  clean up: make clean-run"
	target/release/rundmc agent --manifests $(CURDIR)/manifests/examples \
		--depot $(STATE)/depot --state-dir $(STATE)/run --runtime-root $(STATE)/runc \
		--image-store $(STATE)/images \
		--cni-conf-dir $(CURDIR)/manifests/cni --cni-cache-dir $(STATE)/cni \
		--cgroup-parent $(DEMO_CGROUP)

# Refuses while an agent runs on $(STATE) (its lock is held): stop it first.
clean-run:
	scripts/clean-state.sh $(STATE) $(DEMO_CGROUP) $(CURDIR)/target/release/rundmc

# The agent against raw runc and crun, same run, same image (as root; about
# 5 minutes): writes BENCHMARKS.md and leaves nothing behind.
bench: rootfs build
	target/release/rundmc-bench --image $(ROOTFS) --bin-dir $(CURDIR)/target/release \
		--out $(CURDIR)/BENCHMARKS.md --findings $(CURDIR)/benches/e2e/FINDINGS.md
	scripts/confinement.sh --bin-dir $(CURDIR)/target/release --image $(ROOTFS)

# A default rundmc container's confinement beside a default `podman run` and
# runc's `runc spec` default, each read from inside (as root; seconds).
confinement: rootfs build
	scripts/confinement.sh --bin-dir $(CURDIR)/target/release --image $(ROOTFS)

# The agent's container image, built without a container engine: one
# archive that is an OCI image layout and a Docker archive (docker load,
# podman load, ctr images import, skopeo copy oci-archive:...).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
image: build
	scripts/mkimage.py --bin-dir $(CURDIR)/target/release \
		--out $(CURDIR)/target/image/rundmc-$(VERSION).tar --tag docker.io/rundmc/rundmc:$(VERSION)

clean: clean-run
	cargo clean
