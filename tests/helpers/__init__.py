"""Shared test helpers (importable as `helpers.*`: pytest puts tests/ on sys.path via its rootdir conftest).

Test modules import shared pieces from here, never from one another.
"""
