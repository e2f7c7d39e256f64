# The two quick-start targets install what they need into the active Python, then run.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q --disable-pip-version-check
FASHION_MNIST_DEB = /usr/share/datasets/fashion-mnist

.PHONY: install data demo test test-all

install:
	$(PIP_INSTALL) -e '.[test]' -c constraints.txt

# Debian ships Fashion-MNIST's idx files; elsewhere the build downloads them with torchvision.
data:
	@if [ ! -d $(FASHION_MNIST_DEB) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi

demo: install data
	fadrm-build fashion-mnist --ipc 10 --download

# lint-imports checks the layer contracts in pyproject.toml (no import circles, layers point one way).
test: install
	lint-imports
	$(PYTHON) -m pytest

test-all: install
	lint-imports
	$(PYTHON) -m pytest -m ''
