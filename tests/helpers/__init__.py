"""Test helpers shared across areas (importable: ``tests/`` is on ``sys.path`` through its conftest)."""
