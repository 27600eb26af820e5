"""``signver index``: documents detected, tagged, cropped, cleaned and embedded into a searchable library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from signver_torch.cli.options import EXIT_ERROR, document_limits, engine_options, json_flag, models, quiet_flag
from signver_torch.cli.verify import signver_from_args
from signver_torch.errors import SignVerError


def cmd_index(args: argparse.Namespace) -> int:
    """Index every document in the folders (or files) given into a library, one transaction each."""
    from tqdm.auto import tqdm

    from signver_torch.indexing import document_files, index_files
    from signver_torch.library import DocumentLibrary

    files = [path for item in args.paths for path in (document_files(item) if Path(item).is_dir() else [Path(item)])]
    if not files:
        raise SignVerError(f"no documents ({', '.join(args.paths)}): expected images, TIFFs or PDFs")
    failures = 0
    with tqdm(total=len(files), desc="indexing", unit="doc", file=sys.stderr, disable=args.quiet) as bar:
        def report(result: "Indexed") -> None:  # noqa: F821 (imported lazily)
            nonlocal failures
            failures += result.error is not None
            line = (json.dumps(result.as_dict()) if args.json else
                    f"{result.name}: ERROR: {result.error}" if result.error else
                    f"{result.name}: already indexed (document {result.document_id})" if result.skipped else
                    f"{result.name}: document {result.document_id}, {result.n_pages} page(s), {result.n_signatures} signature(s)")
            bar.write(line, file=sys.stdout)
            bar.update()

        if args.engine == "ray":
            from signver_torch.distributed import index

            index(files, args.library, detector=args.detector, cleaner=args.cleaner, extractor=args.extractor,
                  clean=not args.no_clean, backend=args.backend, address=args.address, actors=args.actors,
                  gpus_per_actor=args.gpus_per_actor, dpi=args.dpi, max_pages=args.max_pages, progress=report)
        else:
            signver = signver_from_args(args)
            with DocumentLibrary(args.library, signver.extractor.sha256) as library:
                index_files(signver, library, files, report, dpi=args.dpi, max_pages=args.max_pages)
    if failures:
        print(f"signver: error: {failures} of {len(files)} documents could not be indexed (each on its line)", file=sys.stderr)
        return EXIT_ERROR
    return 0


def add_index(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser(
        "index", help="index documents (pages, multi-page TIFFs, PDFs) into a searchable library",
        description="Detect, tag, crop, clean and embed every signature of every document into LIB (SQLite). "
        "Each document is one transaction: an interrupted run keeps what it finished; a rerun skips it.")
    index.add_argument("paths", nargs="+", metavar="DIR", help="folders (searched recursively) or document files")
    index.add_argument("--library", required=True,
                       help="library file (SQLite; created if missing), or with --engine ray a folder of Parquet shards")
    engine_options(index, "one Parquet shard per batch; a rerun reads only documents not yet in a shard",
                   local="one process into SQLite", ray="Ray Data into Parquet shards")
    document_limits(index)
    json_flag(index, "one JSON object per document")
    quiet_flag(index)
    models(index, detector=True)
    index.set_defaults(handler=cmd_index)
