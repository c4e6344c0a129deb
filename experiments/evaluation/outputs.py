"""Where evaluation writes: every call keeps its own files, named by what was run, and
the work dir's top-level files are the latest call's.

``scoresde sample`` writes ``samples/<name>.{npz,png,json}`` and copies them to
``samples.{npz,png,json}``; ``scoresde likelihood`` writes ``likelihood/<name>.json``
and copies it to ``likelihood.json`` (the test split; ``likelihood_val.json`` for the
validation split), and ``--method elbo`` the same under ``elbo``. ``<name>`` spells
out the checkpoint step, the weights and the settings, e.g.
``step36000_ema_ode_tsit5_rtol1e-05_n10000_seed0``, so a second call with other
settings never overwrites the first, and each top-level JSON names its kept file
under ``"file"``. ``report.md`` is rebuilt from the top-level files.

Before any work, :func:`check_writable` makes sure the files can be written (a
read-only run fails at once, not after the computation).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import tempfile


def check_writable(workdir: pathlib.Path, kind: str | None) -> None:
    """Raise ``PermissionError`` (naming the path) unless the work dir and
    ``workdir/kind/`` (unless None) can take new files; leaves both as they were."""
    workdir = pathlib.Path(workdir)
    for directory in (workdir,) if kind is None else (workdir, workdir / kind):
        existed = directory.exists()
        try:
            directory.mkdir(exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe-")
            os.close(fd)
            os.unlink(probe)
            if not existed:
                directory.rmdir()
        except OSError as err:
            raise PermissionError(
                f"cannot write the results into {directory} ({err.strerror or err}); "
                "nothing was computed"
            ) from None


def _part(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text)


def name(step: int, weights: str, *parts, **settings) -> str:
    """``step{step}_{weights}_{parts...}_{key}{value}...``: a file name that says what
    was run; ``None`` settings are left out."""
    words = [f"step{step}", weights, *(_part(p) for p in parts if p is not None)]
    words += [f"{k}{_part(v)}" for k, v in settings.items() if v is not None]
    return "_".join(words)


def save_json(workdir: pathlib.Path, kind: str, stem: str, info: dict, latest: str) -> dict:
    """Write ``info`` (with ``"file"`` added) to ``workdir/kind/stem.json`` and to the
    top-level ``latest``; returns the info written."""
    (workdir / kind).mkdir(exist_ok=True)
    info = {**info, "file": f"{kind}/{stem}.json"}
    text = json.dumps(info, indent=2) + "\n"
    (workdir / kind / f"{stem}.json").write_text(text)
    (workdir / latest).write_text(text)
    return info


def latest_copy(workdir: pathlib.Path, kind: str, stem: str, suffixes: tuple[str, ...]) -> None:
    """Copy ``workdir/kind/stem.SUFFIX`` to ``workdir/kind.SUFFIX`` for each suffix."""
    for suffix in suffixes:
        shutil.copyfile(workdir / kind / f"{stem}{suffix}", workdir / f"{kind}{suffix}")


def read(workdir: pathlib.Path, file: str) -> dict | None:
    """A top-level JSON result of ``workdir``, or None where there is none."""
    path = pathlib.Path(workdir) / file
    return json.loads(path.read_text()) if path.exists() else None
