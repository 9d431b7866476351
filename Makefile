# Everything installs into .venv from requirements.lock; nothing needs to be installed by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# Runs a command with DATABASE_URL/REDIS_URL set, starting embedded servers for whichever is unset.
WITH_SERVICES := $(BIN)/python -m scrm.embedded run --

.PHONY: install demo test lint format bench bench-api bench-workbench bench-dispatch bench-dashboard vendor-js lock messages clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q -p $(BIN)/python requirements.lock
	touch $@

lock:
	$(BIN)/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

demo: install
	DJANGO_SETTINGS_MODULE=scrm.settings.local $(BIN)/python -m scrm.embedded demo

test: install
	DJANGO_SETTINGS_MODULE=scrm.settings.test $(WITH_SERVICES) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(WITH_SERVICES) $(BIN)/python manage.py makemigrations --check --dry-run

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	@for script in bench/*.py; do \
		echo "== $$script"; \
		$(WITH_SERVICES) $(BIN)/python $$script || exit 1; \
	done

# Just the HQ dashboard benchmark at the issue's size (also part of `make bench`, at 100,000 members):
# `make bench-dashboard DASHBOARD_MEMBERS=1000000 DASHBOARD_ORDERS=10000000`.
DASHBOARD_MEMBERS ?= 1000000
DASHBOARD_ORDERS ?= 10000000
bench-dashboard: install
	$(WITH_SERVICES) $(BIN)/python bench/dashboard.py --members $(DASHBOARD_MEMBERS) --orders $(DASHBOARD_ORDERS)

# The dashboard's chart library, from the npm registry at the version of dashboard/js/package-lock.json,
# copied into static/dashboard/vendor/ (committed: serving it needs no Node.js, no JS build step).
vendor-js:
	rm -rf .local/npm && mkdir -p .local/npm
	cp dashboard/js/package.json dashboard/js/package-lock.json .local/npm/
	cd .local/npm && npm ci --ignore-scripts --no-audit --no-fund
	# Without its source-map comment: the map is not shipped, and collectstatic's manifest refuses
	# a reference to a missing file.
	sed '/^\/\/# sourceMappingURL=/d' .local/npm/node_modules/chart.js/dist/chart.umd.min.js > static/dashboard/vendor/chart.umd.min.js
	cp .local/npm/node_modules/chart.js/LICENSE.md static/dashboard/vendor/chart.js.LICENSE.md

# Just the REST API order benchmark (also part of `make bench`): `make bench-api API_ORDERS=100000`.
API_ORDERS ?= 50000
bench-api: install
	$(WITH_SERVICES) $(BIN)/python bench/api_orders.py --orders $(API_ORDERS)

# Just the workbench load test (also part of `make bench`): `make bench-workbench GUIDES=50`.
GUIDES ?= 50
bench-workbench: install
	$(WITH_SERVICES) $(BIN)/python bench/workbench_load.py --guides $(GUIDES)

# Just the campaign dispatch benchmark (also part of `make bench`): `make bench-dispatch DISPATCH_MEMBERS=100000`.
DISPATCH_MEMBERS ?= 100000
DISPATCH_STORES ?= 200
bench-dispatch: install
	$(WITH_SERVICES) $(BIN)/python bench/dispatch.py --members $(DISPATCH_MEMBERS) --stores $(DISPATCH_STORES)

# Extract translatable strings and compile the catalogues (msgfmt comes from gettext).
messages: install
	$(BIN)/python manage.py makemessages -l en -l zh_Hans --no-obsolete --ignore ".venv/*" --ignore ".local/*" --ignore "bench/*" --ignore "tests/*"
	$(BIN)/python manage.py compilemessages --ignore ".venv/*"

clean:
	rm -rf .local
