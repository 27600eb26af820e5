"""SignVer Studio: an HTTP service (FastAPI) and a web page over the models, a gallery and a document library.

Needs the ``serve`` extra: ``pip install -e ".[serve]"``. Start it with ``signver serve``.
"""
