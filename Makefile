# Thin wrappers; dev.py needs only Python 3.11+.
.PHONY: demo test lint check ci bench
demo:
	python3 dev.py demo
test:
	python3 dev.py test
lint:
	.venv/bin/ruff check .
check:
	SECRET_KEY=check .venv/bin/python manage.py check --fail-level WARNING
	SECRET_KEY=check .venv/bin/python manage.py makemigrations --check --dry-run
ci:
	bash .ci/run
bench:
	.venv/bin/python bench/secret_digest.py
