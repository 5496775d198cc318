"""Test doubles (importable from tests as ``doubles.*``: pytest puts tests/ on sys.path)."""
