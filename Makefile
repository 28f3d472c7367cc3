# Conveniences over the go tool; `go build ./...` and `go test ./...` need
# nothing from here.
#
#   make plugins   build every example plugin under plugins/ into
#                  bin/plugins/<name>.wasm (WebAssembly, WASI preview 1)
#   make build     build the binaries into bin/
#   make test      go test -race ./... (what README and CI run)

GO ?= go
PLUGIN_DIR ?= bin/plugins
PLUGINS := $(patsubst plugins/%/main.go,%,$(wildcard plugins/*/main.go))

.PHONY: all plugins build test clean

all: build plugins

plugins: $(PLUGINS:%=$(PLUGIN_DIR)/%.wasm)

# Each plugin is a main package with a `//go:build wasip1` constraint, so
# only this cross-compilation sees it.
$(PLUGIN_DIR)/%.wasm: plugins/%/*.go go.mod
	@mkdir -p $(PLUGIN_DIR)
	GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./plugins/$*

build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...

test:
	$(GO) test -race ./...

clean:
	rm -rf bin
