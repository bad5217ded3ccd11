# The README's two commands: `make demo` and `make test`. Both create .venv from the
# repository's own pinned files, so they work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PY_CODE := cli data_tools model evaluation export training runtime estimator_main.py benchmarks
DEMO_DIR ?= demo_output
# TensorFlow's C++ logging is noise in tests and the demo; errors still show.
export TF_CPP_MIN_LOG_LEVEL ?= 2

# Python 3.7 + TensorFlow 1.15, the Ascend users' stack (pyenv's 3.7 works too).
TF1_PYTHON ?= $(shell python3.7 -c 'import sys; print(sys.executable)' 2>/dev/null || ls $$HOME/.pyenv/versions/3.7*/bin/python 2>/dev/null | head -1)
TF1_VENV   := .venv-tf1

LFW_DIR ?= lfw_output

.PHONY: venv venv-tf1 lint test test-slow test-tf1 demo bench bench-peer lfw-recipe lfw-heads model clean

$(STAMP): requirements.txt setup.py
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 9) <= v <= (3, 11) else "TensorFlow 2.15 needs Python 3.9-3.11; run: make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/vermin --target=3.7- --violations --no-tips -q --eval-annotations $(PY_CODE)

test: lint
	$(BIN)/python -m pytest -q -m "not slow" --durations=15 tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

$(TF1_VENV)/.installed-stamp: requirements-tf1.txt
	@test -n "$(TF1_PYTHON)" || { echo "make test-tf1 needs Python 3.7: make test-tf1 TF1_PYTHON=/path/to/python3.7"; exit 1; }
	test -x $(TF1_VENV)/bin/python || $(TF1_PYTHON) -m venv $(TF1_VENV)
	$(TF1_VENV)/bin/python -m pip install --quiet "pip<24"
	$(TF1_VENV)/bin/python -m pip install --quiet -r requirements-tf1.txt
	touch $@

venv-tf1: $(TF1_VENV)/.installed-stamp

# The whole suite (slow cases aside) on TF 1.15 + Python 3.7; not part of `make test`.
test-tf1: $(TF1_VENV)/.installed-stamp
	PYTHONPATH=$(CURDIR) $(TF1_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow or tf1_suite" tests

demo: $(STAMP)
	bash scripts/demo.sh $(DEMO_DIR)

# Real faces (needs ../shared/data or LFW_DATA=...): the fold-10 holdout recipe, and the same
# recipe once per head for the comparison table (README "Real faces").
lfw-recipe: $(STAMP)
	bash scripts/lfw_recipe.sh $(LFW_DIR)

lfw-heads: $(STAMP)
	bash scripts/lfw_heads.sh $(LFW_DIR)

# The released small model (issue 27): LFW-a outside fold 10, aligned, dlib's embeddings as the
# teacher (the [teacher] extra), Circle + distillation; every step resumes.
MODEL_DIR ?= model_output
model: $(STAMP)
	bash scripts/model_recipe.sh $(MODEL_DIR)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# The PyTorch peer (benchmarks/peer_torch.py) lives in its own environment, built from the pinned
# requirements-peer.txt: torch never enters .venv, and `make test` never installs it.
PEER_VENV := .venv-peer
$(PEER_VENV)/.installed-stamp: requirements-peer.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet -r requirements-peer.txt
	touch $@

# Same-run training speed against the peer: iresnet50 and mobilefacenet, alternating rounds.
bench-peer: $(STAMP) $(PEER_VENV)/.installed-stamp
	PEER_PYTHON=$(CURDIR)/$(PEER_VENV)/bin/python $(BIN)/python -m benchmarks.run_all --only=peer

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache
