"""The ``facebank`` command as a user runs it: startup errors in one line with exit code 2, the
startup line, ``--version``, ``models list``, ``--mirror`` and ``celebrities list`` without data.

Startup errors are checked before the models load, so these run without ../shared."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import Server, free_port

from facebank import __version__, models


def facebank(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facebank.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error a failed start prints: exactly one line on stderr, exit code 2, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facebank: "), result.stderr
    return lines[0]


def test_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(facebank("serve", "--port", str(port), "--data-dir", str(tmp_path / "data")))
    assert f"127.0.0.1:{port}" in line and "in use" in line


def test_port_out_of_range(tmp_path):
    line = one_line_error(facebank("serve", "--port", "99999", "--data-dir", str(tmp_path / "data")))
    assert "--port 99999" in line and "0 to 65535" in line


def test_data_dir_naming_a_file(tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("not a directory")
    line = one_line_error(facebank("serve", "--port", str(free_port()), "--data-dir", str(file)))
    assert str(file) in line and "not a directory" in line


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_data_dir_that_cannot_be_created_or_written(tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("")
        data_dir = tmp_path / "file" / "data"
    else:  # /proc takes no new directories, even from root
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc on this system")
        data_dir = Path("/proc/facebank-data")
    line = one_line_error(facebank("serve", "--port", str(free_port()), "--data-dir", str(data_dir)))
    assert str(data_dir) in line and "cannot create" in line


def test_data_dir_not_writable(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory (the /proc case above covers root)")
    data_dir = tmp_path / "read-only"
    data_dir.mkdir(mode=0o500)
    line = one_line_error(facebank("serve", "--port", str(free_port()), "--data-dir", str(data_dir)))
    assert str(data_dir) in line and "not writable" in line


@pytest.mark.parametrize("command", [("serve",), ("models", "fetch"), ("celebrities", "import", "photos")])
def test_mirror_that_does_not_exist(tmp_path, command):
    missing = tmp_path / "no-such-mirror"
    line = one_line_error(facebank(*command, "--mirror", str(missing), cwd=tmp_path))
    assert f"--mirror {missing}" in line and "no such directory" in line


def test_mirror_variable_that_does_not_exist_is_named_when_a_file_is_needed(tmp_path):
    missing = tmp_path / "no-such-mirror"
    env = {"FACEBANK_MODEL_MIRROR": str(missing), "FACEBANK_MODEL_DIR": str(tmp_path / "models")}
    line = one_line_error(facebank("models", "fetch", env=env))
    assert f"the model mirror {missing}" in line and "not a directory" in line


def test_version(capsys):
    from facebank.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"facebank {__version__}"


def test_models_list_names_every_file_with_size_state_and_licence(tmp_path):
    entries = models.manifest()
    cache = tmp_path / "models"
    # One corrupt file in an otherwise empty cache.
    corrupt = next(iter(entries.values()))
    (cache / corrupt.path).parent.mkdir(parents=True)
    (cache / corrupt.path).write_bytes(b"not the model")
    result = facebank("models", "list", env={"FACEBANK_MODEL_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"model cache {cache}"
    rows = {cells[2]: cells for cells in (line.split("\t") for line in lines[1:])}
    assert set(rows) == set(entries)
    for path, entry in entries.items():
        state, size, _, packs, licence = rows[path]
        assert state == ("corrupt" if path == corrupt.path else "missing")
        value, unit = size.split()
        scale = {"kB": 1e3, "MB": 1e6}[unit]  # one decimal: within half a tenth of the unit
        assert float(value) == pytest.approx(entry.size / scale, abs=0.051) and (unit == "MB") == (entry.size >= 1e6)
        assert licence == entry.license
    assert "open" in rows["dlib/dlib_face_recognition_resnet_model_v1.onnx"][3].split(",")


def test_models_list_says_verified_for_a_cached_file(model_env):
    result = facebank("models", "list", env=model_env)
    assert result.returncode == 0, result.stderr
    states = {line.split("\t")[2]: line.split("\t")[0] for line in result.stdout.splitlines()[1:]}
    assert states["dlib/dlib_face_recognition_resnet_model_v1.onnx"] == "verified"


def test_celebrities_list_without_data_creates_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FACEBANK_DATA_DIR"}
    result = subprocess.run(
        [sys.executable, "-m", "facebank.cli", "celebrities", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert "no such data directory" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_startup_line_names_address_data_dir_pack_and_models(model_env, tmp_path):
    from facebank.engine.packs import pack
    from facebank.settings import Settings

    data_dir = tmp_path / "data"  # does not exist: created, with a line saying so
    server = Server(model_env, data_dir)
    try:
        log = (data_dir.parent / f"server-{server.port}.log").read_text()
    finally:
        server.stop()
    assert f"created the data directory {data_dir}" in log
    line = next(line for line in log.splitlines() if f"on http://127.0.0.1:{server.port}/" in line)
    settings = Settings.from_env(model_env)
    assert f"data dir {data_dir}" in line and f"pack {pack(settings.pack).name}" in line
    assert f"models in {settings.resolved_model_dir.absolute()}" in line
