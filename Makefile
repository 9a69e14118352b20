# The two commands of the quick start: `make demo` and `make test`.
# Both create .venv with pip (torch and torchvision come from the machine's wheel store when present).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/crossformer train

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

bench: $(STAMP)
	$(PY) benchmarks/model_zoo.py

clean:
	rm -rf $(VENV) runs .pytest_cache
