"""The matcher module (see docs/design.md): api.py (distances and decisions), gallery.py (the enrolled store)."""
