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

.PHONY: build
build: ## build bin/kindlab
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kindlab

.PHONY: lab
lab: build ## the main job: bring up $(LAB) (default all-features) on kind
	./$(BIN) up $(LAB) $(if $(NODE_IMAGE),--image $(NODE_IMAGE))

.PHONY: down
down: build
	./$(BIN) down $(LAB)

# Tools the tests talk to for real: a distribution registry binary, skopeo
# (a reader of OCI images that is not ours) and a Docker engine.
.PHONY: deps
deps:
	@missing=""; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing:$$missing (install them; tests that need them will skip)"; fi; \
	fi

.PHONY: docker
docker: ## start a Docker engine here if none answers (CI machines)
	bash .ci/docker.sh

.PHONY: k8s-bins
k8s-bins: ## build kube-apiserver, kube-controller-manager and etcd $(K8S_VERSION) from source into $(KINDLAB_CACHE)
	bash fixtures/k8sbin/build.sh kube-apiserver kube-controller-manager etcd

.PHONY: unit
unit: ## tests that need nothing but Go
	$(GO) test ./provision/lab/... ./provision/render/... ./cmd/...

.PHONY: test
test: deps docker k8s-bins ## every test, against a real registry, Docker engine and kube-apiserver
	$(GO) vet ./...
	KINDLAB_REQUIRE_K8S=1 KINDLAB_REQUIRE_DOCKER=1 $(GO) test -count=1 -timeout 30m ./...
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 20s ./provision/lab

.PHONY: bench
bench: deps docker
	$(GO) test -run '^$$' -bench . -benchtime 1x ./provision/artifact/...

.PHONY: fmt
fmt:
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: help
help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
