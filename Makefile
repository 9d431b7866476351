# Everything installs into .venv from requirements.lock; nothing needs to be installed by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# Runs a command with DATABASE_URL/REDIS_URL set, starting embedded servers for whichever is unset.
WITH_SERVICES := $(BIN)/python -m scrm.embedded run --

.PHONY: install demo test lint format bench lock messages clean

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

# Extract translatable strings and compile the catalogues (msgfmt comes from gettext).
messages: install
	$(BIN)/python manage.py makemessages -l en -l zh_Hans --no-obsolete --ignore ".venv/*" --ignore ".local/*" --ignore "bench/*" --ignore "tests/*"
	$(BIN)/python manage.py compilemessages --ignore ".venv/*"

clean:
	rm -rf .local
