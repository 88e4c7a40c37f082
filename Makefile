# kindlab: the README's two commands are `make lab` (the main job) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO        ?= go
BIN       := bin/kindlab
LAB       ?= all-features
K8S_VERSION := v1.31.14
export KINDLAB_CACHE ?= $(HOME)/.cache/kindlab
# Node image for `make lab`: the lab's pinned image unless overridden (e.g. the offline build).
NODE_IMAGE ?=
VERSION   := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/kindlab/kindlab/cmd/kindlab/app.Version=$(VERSION)

# Static (CGO_ENABLED=0; nothing in kindlab needs cgo): the same binary runs
# inside the kind nodes as the image-volume CRI shim (`kindlab cri-shim`),
# and a node's libc is not this machine's. `up` refuses a dynamic build.
.PHONY: build
build: ## build bin/kindlab (static)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kindlab

# The node image the labs pin (labs/base.yaml).
PINNED_NODE_IMAGE := $(shell sed -n 's/^ *nodeImage: *//p' labs/base.yaml)

# Where the pinned images cannot be pulled (an air-gapped room, these CI
# machines), `make lab` builds the node and workload images from source and
# uses them: the same Kubernetes patch, the same containerd.
.PHONY: lab
lab: deps-lab build docker ## the main job: bring up $(LAB) (default all-features) on kind
	@if [ -n "$(NODE_IMAGE)" ] || docker image inspect '$(PINNED_NODE_IMAGE)' >/dev/null 2>&1 || \
	    docker pull '$(PINNED_NODE_IMAGE)' >/dev/null 2>&1; then \
	  ./$(BIN) up $(LAB) $(if $(NODE_IMAGE),--image $(NODE_IMAGE)); \
	else \
	  echo "make lab: cannot pull $(PINNED_NODE_IMAGE); building the images from source instead (make lab-offline)"; \
	  $(MAKE) --no-print-directory lab-offline; \
	fi

.PHONY: lab-offline
lab-offline: node-image offline-images ## bring up $(LAB) from images built from source, no registry needed
	KINDLAB_REGISTRY_IMAGE=$(OFFLINE_REGISTRY_IMAGE) KINDLAB_IMAGE_OVERRIDES="agnhost=$(OFFLINE_AGNHOST)" \
	  ./$(BIN) up $(LAB) --image $(OFFLINE_NODE_IMAGE)

.PHONY: down
down: build
	./$(BIN) down $(LAB)

# Tools the tests talk to for real: a distribution registry binary, skopeo
# (a reader of OCI images that is not ours), containerd's ctr (pulls through
# the hosts.toml kindlab writes), busybox (tiny test containers) and a
# Docker engine; debootstrap and libseccomp build the offline node image;
# sshd (openssh-server) lets the tests reach this engine as a remote one
# over DOCKER_HOST=ssh://; chromium is the real browser the console's test
# drives (chromedp). `make lab` needs only the lab's share (deps-lab).
# On Debian as root they are installed with apt; elsewhere the packages are
# named and make stops.
INSTALL_MISSING = if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "make $@: missing:$$missing — install these packages (on Debian: apt-get install -y$$missing), then run make again" >&2; exit 1; fi; \
	fi

# The lab's share: a Docker engine where none answers (the local one, which
# .ci/docker.sh starts), and what builds the node image offline.
.PHONY: deps-lab
deps-lab:
	@missing=""; \
	docker info >/dev/null 2>&1 || command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	pkg-config --exists libseccomp 2>/dev/null || missing="$$missing libseccomp-dev pkg-config"; \
	$(INSTALL_MISSING)

.PHONY: deps
deps: deps-lab
	@missing=""; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v ctr >/dev/null || missing="$$missing containerd"; \
	[ -x /usr/bin/busybox ] || missing="$$missing busybox-static"; \
	command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ssh >/dev/null || missing="$$missing openssh-client"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	$(INSTALL_MISSING)

.PHONY: docker
docker: ## start a Docker engine here if none answers (CI machines)
	bash .ci/docker.sh

# kindlab's second engine (TestEndToEndPodman): rootful podman's API service
# on unix:///run/podman/podman.sock, with the containers.conf that lets
# podman start containers on this VM (CONTAINERS_CONF, see .ci/podman.sh).
PODMAN_CONF := /etc/kindlab/podman/containers.conf
.PHONY: podman
podman: ## start podman's Docker-compatible API service here if none answers (CI machines)
	KINDLAB_PODMAN_CONF=$(PODMAN_CONF) bash .ci/podman.sh

.PHONY: k8s-bins
k8s-bins: ## build kube-apiserver, kube-controller-manager, kubeadm, kube-proxy and etcd $(K8S_VERSION) from source into $(KINDLAB_CACHE)
	bash fixtures/k8sbin/build.sh kube-apiserver kube-controller-manager kubeadm kube-proxy etcd

# Upstream's end-to-end tests (kindlab conformance, and the e2e run's
# conformance subtest): e2e.test of k8s.io/kubernetes $(K8S_VERSION) and the
# kubectl it execs into test pods with, cached by version in
# $(KINDLAB_CACHE)/k8s/$(K8S_VERSION)/bin (a present binary is not rebuilt).
# Cold, it shares Go's build cache with k8s-bins (which test and node-image
# run first): 1833 of e2e.test's 2108 packages are theirs at the same module
# versions and flags (fixtures/e2ebin/go.mod pins what fixtures/k8sbin does),
# so only the test packages and their own dependencies compile then.
.PHONY: e2e-bin
e2e-bin: ## build upstream's e2e.test and kubectl $(K8S_VERSION) from source into $(KINDLAB_CACHE)
	bash fixtures/e2ebin/build.sh
	bash fixtures/k8sbin/build.sh kubectl

.PHONY: unit
unit: ## tests that need nothing but Go
	$(GO) test ./provision/lab/... ./provision/render/... ./cmd/...

# --- Offline: no container registry answers here, so every image a lab runs
# is built from source (pinned module versions, deterministic digests). ---
OFFLINE_NODE_IMAGE     ?= kindlab.local/node:$(K8S_VERSION)
OFFLINE_REGISTRY_IMAGE ?= kindlab.local/registry:2.8-debian
# agnhost as upstream builds its image (k8s.io/kubernetes $(K8S_VERSION)
# test/images/agnhost): the binary as the entrypoint, on a userland with the
# shell and the tools upstream's e2e framework execs in it (sh, nc, curl, dig,
# ip, ping, …; fixtures/agnhost/build.sh). It is named after a registry nobody
# can reach (kindlab.local) and pushed to the local registry's mirror path for
# it, so nodes pull it the way they pull registry.k8s.io images from a kit:
# through their containerd mirror config. Its digest is derived, not copied:
# the build writes TAG@DIGEST to OFFLINE_AGNHOST_REF, and OFFLINE_AGNHOST reads
# it when a recipe uses it, after offline-images ran (a recursive variable).
# The build is reproducible from its cached userland layer; a cold one takes
# Debian's current packages. OFFLINE_AGNHOST=REF@sha256:… pins another.
OFFLINE_AGNHOST_TAG := kindlab.local/e2e-test-images/agnhost:2.52-k8s-$(K8S_VERSION)
OFFLINE_AGNHOST_REF := $(KINDLAB_CACHE)/agnhost/reference
OFFLINE_AGNHOST ?= $(or $(shell cat '$(OFFLINE_AGNHOST_REF)' 2>/dev/null),$(error $(OFFLINE_AGNHOST_REF) is missing: run make offline-images first))
DEVICEPLUGIN := fixtures/allocated-resources-status/deviceplugin

.PHONY: node-image
node-image: docker ## build the kind node image for $(K8S_VERSION) from source (cached in $(KINDLAB_CACHE))
	bash fixtures/nodeimage/build.sh

# The test's genuinely remote Docker engine (TestEndToEndRemoteEngine):
# Debian's dockerd in a privileged container, reached on a loopback port.
# Keyed by its build script, the runc wrapper and debootstrap's version.
.PHONY: remote-engine
remote-engine: deps-lab docker ## build the image of the tests' remote Docker engine (cached in $(KINDLAB_CACHE))
	bash fixtures/remoteengine/build.sh

.PHONY: offline-images
offline-images: build docker ## build the labs' workload images from source and push them to the local registry
	./$(BIN) registry build-image
	./$(BIN) registry up --registry-image $(OFFLINE_REGISTRY_IMAGE)
	cd $(DEVICEPLUGIN) && $(GO) run ./cmd/build-image -push localhost:5001/kindlab/health-device-plugin:v1.31.14
	KINDLAB_AGNHOST_TAG=$(OFFLINE_AGNHOST_TAG) bash fixtures/agnhost/build.sh \
	  -push localhost:5001/mirror/$(OFFLINE_AGNHOST_TAG) -ref-file $(OFFLINE_AGNHOST_REF)

# The end-to-end run: a kit saved from the offline-built images, the engine
# and registry emptied of them, the kit loaded back (a tampered copy refused
# first), then all-features on a 3-node kind cluster from what the kit
# loaded, every check against it, then down (asserting nothing is left).
E2E_KIT ?= $(KINDLAB_CACHE)/e2e/all-features-kit.tar
# The tests run kindlab in-process; the nodes' CRI shim is bin/kindlab.
# Recursive (=): OFFLINE_AGNHOST is read once offline-images has run.
# The console's browser test leaves its screenshots in test-artifacts/.
E2E_ENV = KINDLAB_REQUIRE_E2E=1 KINDLAB_E2E_IMAGE=$(OFFLINE_NODE_IMAGE) KINDLAB_E2E_KIT=$(E2E_KIT) \
	KINDLAB_E2E_TEST=$(KINDLAB_CACHE)/k8s/$(K8S_VERSION)/bin/e2e.test \
	KINDLAB_TEST_ARTIFACTS=$(CURDIR)/test-artifacts \
	KINDLAB_CRI_SHIM_BINARY=$(CURDIR)/$(BIN) KINDLAB_REQUIRE_PODMAN=1 CONTAINERS_CONF=$(PODMAN_CONF) \
	KINDLAB_REGISTRY_IMAGE=$(OFFLINE_REGISTRY_IMAGE) KINDLAB_IMAGE_OVERRIDES="agnhost=$(OFFLINE_AGNHOST)"

.PHONY: e2e
e2e: node-image offline-images remote-engine podman e2e-bin ## bring all-features up on kind, run every check, take it down
	$(E2E_ENV) $(GO) test -count=1 -v -timeout 45m -run TestEndToEnd ./cmd/kindlab/app/
	$(E2E_ENV) $(GO) test -count=1 -v -timeout 15m -run TestDownKeepsRegistryOtherStateDirUses ./provision/down/

# Every test, against real components: a distribution registry, a Docker
# engine, kube-apiserver/etcd/kube-controller-manager built from source, and
# a kind cluster from the offline node image. REQUIRE makes a missing
# component a failure instead of a skip. The end-to-end run goes last, on its
# own, so a 3-node cluster does not compete with the apiservers of the suite.
.PHONY: test
test: deps docker podman k8s-bins e2e-bin node-image ## every test, including the offline end-to-end run on kind
	$(GO) vet ./...
	KINDLAB_REQUIRE_K8S=1 KINDLAB_REQUIRE_DOCKER=1 KINDLAB_REQUIRE_PODMAN=1 CONTAINERS_CONF=$(PODMAN_CONF) \
	  $(GO) test -count=1 -timeout 30m -skip TestEndToEnd ./...
# Fuzz budgets are counts, not durations: go1.26's fuzz coordinator can
# fail a -fuzztime <duration> run with a bare "context deadline
# exceeded" when a loaded machine's worker misses the deadline (Go issue
# 75804, fixed in go1.27); a count has no deadline to race. Each is
# about 10 s of fuzzing each on these 2 cores.
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 4000x -fuzzminimizetime 10s ./provision/lab
	$(GO) test -run '^$$' -fuzz '^FuzzCheckExtract$$' -fuzztime 50000x -fuzzminimizetime 10s ./provision/internal/confine
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime 2500x -fuzzminimizetime 10s ./provision/bundle
	$(GO) test -run '^$$' -fuzz '^FuzzOpenKit$$' -fuzztime 3500x -fuzzminimizetime 10s ./provision/kit
	$(MAKE) --no-print-directory e2e

.PHONY: bench
bench: deps docker ## artifact push vs crane, kit save/load vs the disk and docker save/load (same run)
	$(GO) test -run '^$$' -bench . -benchtime 1x ./provision/artifact/...
	$(GO) test -run '^$$' -bench . -benchtime 2x -timeout 30m ./provision/kit/...

# kindlab's CRI shim: pod start latency of 30-pod bursts through the shim
# and straight to containerd on the same node (alternating), and the shim's
# CPU and RSS idle and under the bursts. Needs the offline images (make e2e's).
.PHONY: bench-lab
bench-lab: build node-image offline-images ## up vs plain kind, reset vs down+up, on $(LAB) (issue #16's ratios)
	$(E2E_ENV) KINDLAB_BENCH_LAB=$(LAB) $(GO) test -count=1 -run '^$$' -bench BenchmarkLabUpVsKind -benchtime 1x -timeout 40m -v ./cmd/kindlab/app/

.PHONY: bench-shim
bench-shim: node-image offline-images ## CRI shim: 30-pod start latency with/without it, its CPU and memory
	$(E2E_ENV) $(GO) test -count=1 -run '^$$' -bench BenchmarkCRIShimPodStart -benchtime 1x -timeout 40m -v ./cmd/kindlab/app/

.PHONY: fmt
fmt:
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: help
help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
