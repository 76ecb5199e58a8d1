# One command per habit. `make install` is implied by the others.
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
PROTOC   = PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m grpc_tools.protoc
PROTOS   = $(wildcard proto/tunegate/v1/*.proto)
GEN      = clients/python
BUF      = node_modules/.bin/buf
TS       = clients/typescript
TS_DEPS  = $(TS)/node_modules/.package-lock.json

.PHONY: install proto lint test run bench clean

$(BIN)/tunegate: pyproject.toml
	@echo "installing tunegate and its dependencies (PyTorch CPU included) into $(VENV); this takes a minute or two"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,local]'
	touch $@

install: $(BIN)/tunegate

$(BUF): package.json
	npm install --no-audit --no-fund --silent
	touch $@

# The TypeScript package's dependencies, its code generator (protoc-gen-es) included.
$(TS_DEPS): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund
	touch $@

# Python stubs with grpc_tools' protoc; everything in buf.gen.yaml (the TypeScript client) with buf;
# the REST surface's OpenAPI document from the stubs just written (tunegate.edge._openapi).
proto: install $(BUF) $(TS_DEPS)
	$(PROTOC) -Iproto -Ithird_party -I$$($(BIN)/python -c 'import grpc_tools,os;print(os.path.join(os.path.dirname(grpc_tools.__file__),"_proto"))') \
	  --python_out=$(GEN) --mypy_out=$(GEN) --grpc_python_out=$(GEN) --mypy_grpc_out=$(GEN) $(PROTOS)
	$(BUF) generate
	$(BIN)/tunegate openapi --proto proto --include third_party --out edge/tunegate/edge/openapi.json

lint: install $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BUF) lint
	if git rev-parse --verify -q main >/dev/null; then $(BUF) breaking --against '.git#branch=main'; fi

# The TypeScript suite starts its own `tunegate run`, the one in $(BIN).
test: lint $(TS_DEPS)
	$(BIN)/pytest
	cd $(TS) && PATH=$(abspath $(BIN)):$$PATH npm test

run: install
	@echo "starting tunegate: REST http://127.0.0.1:8787/v1, console http://127.0.0.1:8787/console, gRPC 127.0.0.1:50051, data ./data"
	$(BIN)/tunegate run

bench: install
	$(BIN)/python bench/upload_bench.py --size 1G --reps 2 --out bench/upload-results.jsonl

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache $(TS)/node_modules $(TS)/dist $(TS)/build-test
