# Two commands for a new user: `make run` and `make test`. Both set themselves up.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test lint format bench fuzz explore mutate soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "==> installing authz and its tools into $(VENV)"
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

## Start authz + a real Envoy + a demo upstream with config/example.yaml, print curl lines.
run: $(STAMP)
	@$(BIN)/python scripts/run.py

## Lint and type-check, then every test (unit, integration through a real Envoy, PostgreSQL).
test: $(STAMP)
	@$(BIN)/ruff format --check . || (echo "run 'make format' to fix formatting"; exit 1)
	@$(BIN)/ruff check .
	@$(BIN)/python -m mypy
	@$(BIN)/python -m pytest -q -p no:cacheprovider

format: $(STAMP)
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

## The benchmark against Envoy's native filters (never part of `make test`). SOAK=1 adds a soak.
bench: $(STAMP)
	@$(BIN)/python -m bench

## Coverage-guided fuzzing (atheris), FUZZ_SECONDS per target (default 60).
fuzz: $(STAMP)
	@$(BIN)/python -m tests.fuzz

## The property tests with ten times as many random (not derandomized) examples.
explore: $(STAMP)
	@HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -q -p no:cacheprovider tests/property tests/adversarial/test_redos.py

## Mutation testing of the security core (tests/mutation), MUTATE_SECONDS in all (default 3600).
mutate: $(STAMP)
	@$(BIN)/python -m tests.mutation

## Faults and overload through a real Envoy, bounded in time (not part of `make test`).
soak: $(STAMP)
	@$(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) .run build *.egg-info
