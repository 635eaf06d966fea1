# secondns developer targets.  `make test` is the README's test command and what CI runs.
PYTHON ?= python3

.PHONY: run test deps lint typecheck unit bench

run:
	$(PYTHON) -m pip install -q --disable-pip-version-check . && secondns serve -c secondns.yaml

deps:
	sh .ci/install-deps

lint:
	ruff check secondns tests bench

typecheck:
	mypy --strict secondns

unit:
	$(PYTHON) -m pytest -q -m "not integration"

test: deps lint typecheck
	$(PYTHON) -m pytest -q -n 2 --dist loadfile

bench:
	$(PYTHON) bench/serve_qps.py
