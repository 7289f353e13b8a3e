"""Bridges to other training frameworks (optional dependencies, imported lazily)."""
