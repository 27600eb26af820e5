"""``signver serve``: SignVer Studio over HTTP (FastAPI + uvicorn, the serve extra)."""

from __future__ import annotations

import argparse
import json
import os

from signver_torch.cli.options import backend_option, checkpoints, document_limits
from signver_torch.errors import SignVerError


def cmd_serve(args: argparse.Namespace) -> int:
    """SignVer Studio over HTTP: the models loaded once, the page at /, the API under /api, OpenAPI at /docs."""
    try:
        import uvicorn

        from signver_torch.studio.app import SETTINGS_VARIABLE, TOKEN_VARIABLE, StudioSettings, create_app
    except ImportError as error:
        raise SignVerError(f"signver serve needs the serve extra (pip install -e \".[serve]\"): {error}") from None
    settings = StudioSettings(gallery=args.gallery, library=args.library, token=args.token or os.environ.get(TOKEN_VARIABLE),
                              host=args.host, detector=args.detector, cleaner=args.cleaner, extractor=args.extractor,
                              backend=args.backend, max_upload_mb=args.max_upload_mb, max_pages=args.max_pages, dpi=args.dpi)
    settings.check()
    log_config = {"version": 1, "disable_existing_loggers": False,
                  "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
                  "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}},
                  "loggers": {"signver": {"handlers": ["stderr"], "level": "INFO"},
                              "uvicorn": {"handlers": ["stderr"], "level": "INFO"}}}
    if args.workers > 1:  # each worker process builds its own app (and loads the models) from the environment
        os.environ[SETTINGS_VARIABLE] = json.dumps({key: value for key, value in vars(settings).items() if key != "token"})
        if settings.token:
            os.environ[TOKEN_VARIABLE] = settings.token
        uvicorn.run("signver_torch.studio.app:create_app_from_environment", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_config=log_config, access_log=False)
    else:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=log_config, access_log=False)
    return 0


def add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="SignVer Studio: the HTTP API and the web page (needs the serve extra)",
        description="Serve the models over HTTP (FastAPI + uvicorn): the page at /, the API under /api, OpenAPI docs "
        "at /docs. Binds to 127.0.0.1; elsewhere, writes need --token (or $SIGNVER_TOKEN).")
    serve.add_argument("--gallery", help="gallery of enrolled people (SQLite; created on first enrolment)")
    serve.add_argument("--library", help="document library (SQLite; created if missing)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="processes, each with its own models (default 1)")
    serve.add_argument("--token", help="token that writes (enrol, delete, index) must carry")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload per file (default 20 MB)")
    document_limits(serve)
    checkpoints(serve, detector=True)
    backend_option(serve)
    serve.set_defaults(handler=cmd_serve)
