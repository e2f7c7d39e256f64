# The two quick-start targets install what they need into the active Python, then run: the demo only the
# library and the builder (the `build` extra), the tests everything (the `test` extra: build, continual,
# pytest, import-linter).
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q --disable-pip-version-check -c constraints.txt
FASHION_MNIST_DEB = /usr/share/datasets/fashion-mnist

.PHONY: install-build install-test data demo test test-all

install-build:
	$(PIP_INSTALL) -e '.[build]'

install-test:
	$(PIP_INSTALL) -e '.[test]'

# Debian ships Fashion-MNIST's idx files; elsewhere the build downloads them with torchvision.
data:
	@if [ ! -d $(FASHION_MNIST_DEB) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi

demo: install-build data
	fadrm-build fashion-mnist --ipc 10 --download

# lint-imports checks the layer contracts in pyproject.toml (no import circles, layers point one way).
test: install-test
	lint-imports
	$(PYTHON) -m pytest

test-all: install-test
	lint-imports
	$(PYTHON) -m pytest -m 'not cuda'  # the CUDA cases run in benchmarks/gpu_check.sh
