"""The matcher module (see DESIGN.md): model.py, lit.py, api.py."""
