# neurodeploy: two commands for a newcomer, `make demo` and `make test`.
# Both create .venv with Python 3.10 (lava-nc 0.10.0 needs it) and reuse it while pyproject.toml
# is unchanged.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
ND    := $(VENV)/bin/neurodeploy
STAMP := $(VENV)/.installed
DEMO  := build/demo

.PHONY: demo test lint bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@set -e; \
	if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then \
		echo "$(VENV) is not Python 3.10: recreating it"; rm -rf $(VENV); fi; \
	if [ ! -x $(PY) ]; then \
		py=$$(sh tools/find_python310.sh); \
		echo "creating $(VENV) with $$py"; \
		"$$py" -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

DATA  := build/synthetic-nmnist

# The main job end to end on the bundled default model (models/default, tools/train_default.py).
demo: $(STAMP)
	@mkdir -p $(DEMO)
	@[ -f $(DATA)/meta.json ] || $(PY) tools/make_dataset.py --out $(DATA)
	$(ND) compile models/default/model.pt --target loihi-sim -o $(DEMO)/model.ndp
	$(ND) inspect $(DEMO)/model.ndp
	$(ND) run $(DEMO)/model.ndp --input models/default/samples.npz --samples 8 --backend lava --compare
	$(PY) tools/make_stream.py --data $(DATA) --n 8 --out $(DEMO)/stream.raw
	$(ND) run $(DEMO)/model.ndp --events $(DEMO)/stream.raw --window 320ms
	$(ND) eval $(DEMO)/model.ndp --dataset $(DATA)/test
	$(ND) energy $(DEMO)/model.ndp --events $(DATA)/test --samples 100 --target loihi2 -o $(DEMO)/energy.html

test: $(STAMP)
	$(VENV)/bin/ruff check neurodeploy tests tools
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check neurodeploy tests tools

clean:
	rm -rf build .pytest_cache
