"""End-to-end tests use the session's local stack from ``tests/localstack.py``."""
