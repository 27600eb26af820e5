"""The extractor module (see docs/design.md): model.py, lit.py, api.py."""
