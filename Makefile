# callvault: the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard proto/callvault/v1/*.proto)

.PHONY: run test install proto check-proto lint typecheck migrate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Start the service on embedded defaults: SQLite and blobs under ./var, gRPC :50051, REST :8080.
run: install
	CALLVAULT_ENV=$${CALLVAULT_ENV:-dev} $(BIN)/callvault serve

## Run the whole test suite (SQLite, and PostgreSQL when its server binaries are installed).
test: install
	$(BIN)/pytest

migrate: install
	$(BIN)/callvault migrate

## Regenerate gen/ from proto/ (python modules, gRPC stubs and .pyi type stubs).
proto: install
	rm -rf gen/callvault
	mkdir -p gen
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	touch gen/callvault/__init__.py gen/callvault/v1/__init__.py gen/callvault/py.typed

## Fail when gen/ is not what `make proto` produces from proto/.
check-proto: proto
	git diff --exit-code --stat -- gen
	test -z "$$(git status --porcelain -- gen)"

lint: install
	$(BIN)/ruff check service tests $(wildcard bench)
	$(BIN)/ruff format --check service tests $(wildcard bench)
	$(BIN)/mypy service tests $(wildcard bench)

## Benchmarks of the real server on loopback, each figure beside its limit measured in the same
## run: `make bench` (about 10 minutes on 2 cores), `make bench BENCH_ARGS="--quick"` (a smoke run),
## `make bench BENCH_ARGS="--only list"`.
.PHONY: bench-tools
bench-tools: install
	@command -v h2load >/dev/null && command -v nghttp >/dev/null && command -v wrk >/dev/null || \
		{ SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update && $$SUDO apt-get install -y nghttp2-client wrk; }
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy

bench: bench-tools
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
