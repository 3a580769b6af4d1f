# The README's commands. `make lab` is the main job; `make test` runs every test, lab included.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup lab test lint plan clean

setup:
	./scripts/setup.sh

# Main job: a rack in a box (2 nodes) provisioned by site.yml, serving a tiny model, validated.
lab: setup
	$(BIN)/llmrack lab up --nodes 2

# The capacity planner's comparison of every accelerator for a distilled DeepSeek model.
plan: setup
	$(BIN)/llmrack plan --model deepseek-r1-distill-qwen-32b --context 8192 --concurrency 32

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check llmrack serving infra tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
