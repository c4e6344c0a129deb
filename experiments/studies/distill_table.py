r"""``scoresde experiment distill-table``: the students of ``scoresde distill`` side by
side with their teacher, on one data set: quality at 1, 2 and 4 steps, network
evaluations, the distillation's wall time.

Each work dir is sampled through ``scoresde sample``'s own path
(:func:`experiments.evaluation.sample`: the student's sampler, its grid, its EMA
weights), ``--n`` samples from seed 0, so the rows are what a user gets. Quality is
measured where it is known exactly:

- ``checkerboard``: the share of samples inside the board's support (the squares are
  known, :func:`experiments.data.toy_log_prob`), with its binomial standard error;
- labelled images (``digits``, ``mnist``, ``cifar10``): the Fréchet distance in the
  local classifier's features (:func:`experiments.evaluation.sample_quality`), and with
  ``--class-accuracy`` also the share of ``--n`` class-conditional samples (``"all"``
  classes, guidance ``--guidance``) classified as the requested class.

The teacher is sampled with its config's default sampler. Writes ``distill_table.md``
and ``distill_table.json`` to ``--out`` (default: the current directory). Example::

    scoresde experiment distill-table --teacher runs/cb --students runs/cb_cd runs/cb_pd \
        --steps 1 2 4 --n 10000 --out runs/cb_table
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from experiments._parser import Parser, integer


def support_share(samples: np.ndarray) -> tuple[float, float]:
    """Share of 2-D ``samples`` on the checkerboard's support and its standard error."""
    from experiments.data import toy_log_prob

    inside = np.isfinite(toy_log_prob("checkerboard", samples))
    p = float(np.mean(inside))
    return p, float(np.sqrt(p * (1 - p) / len(inside)))


def measure(workdir: pathlib.Path, steps: int | None, n: int, class_accuracy: bool,
            guidance: float) -> dict:  # fmt: skip
    """One row: ``workdir`` sampled at ``steps`` (None: its default sampler)."""
    from experiments import evaluation
    from experiments.run import Run

    run = Run.restore(workdir).with_weights("ema")
    info = evaluation.sample(run, steps=steps, n=n, seed=0, progress=False)
    row = {"workdir": str(workdir), "method": run.cfg.distill.method or "teacher",
           "steps": info["steps"], "nfe": info["nfe"], "solver": info["solver"],
           "grid": info["grid"]}  # fmt: skip
    if run.cfg.data.name == "checkerboard":
        x = np.load(workdir / "samples.npz", allow_pickle=False)["samples"]
        row["support_share"], row["support_share_se"] = support_share(x)
    elif run.source.is_image:
        row["fd"] = evaluation.sample_quality(run, progress=False)["fid"]
        if class_accuracy and run.cfg.model.num_classes:
            evaluation.sample(run, steps=steps, n=n, seed=0, labels="all", guidance=guidance,
                              progress=False)  # fmt: skip
            got = evaluation.sample_quality(run, progress=False)
            row["class_accuracy"], row["fd_conditional"] = got["accuracy"], got["fid"]
    seconds = workdir / "distill.json"
    if seconds.exists():
        row["distill_seconds"] = json.loads(seconds.read_text())["seconds"]
    return row


def _cell(row: dict) -> str:
    if "support_share" in row:
        return f"{100 * row['support_share']:.1f} ± {100 * row['support_share_se']:.1f}%"
    text = f"FD {row['fd']:.1f}"
    if "class_accuracy" in row:
        text += f", {100 * row['class_accuracy']:.1f}% class"
    return text


def table(rows: list[dict], steps: list[int]) -> str:
    """Markdown: one line per work dir, one column per step count."""
    header = "| run | method | " + " | ".join(f"{k} step{'s' * (k > 1)}" for k in steps)
    lines = [header + " | distillation |", "|---" * (len(steps) + 3) + "|"]
    by_dir: dict[str, list[dict]] = {}
    for row in rows:
        by_dir.setdefault(row["workdir"], []).append(row)
    for workdir, group in by_dir.items():
        if group[0]["method"] == "teacher":
            r = group[0]
            cells = [f"{_cell(r)} ({r['solver']}, {r['nfe']:.0f} NFE)"] + [""] * (len(steps) - 1)
        else:
            cells = [_cell(r) for r in group]
        secs = group[0].get("distill_seconds")
        time = f"{secs / 60:.1f} min" if secs is not None else ""
        name = pathlib.Path(workdir).name
        lines.append(f"| {name} | {group[0]['method']} | " + " | ".join(cells) + f" | {time} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="scoresde experiment distill-table", description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=pathlib.Path, help="the teacher's work dir")
    p.add_argument("--students", type=pathlib.Path, nargs="+", required=True)
    p.add_argument("--steps", type=integer(1), nargs="+", default=[1, 2, 4])
    p.add_argument("--n", type=integer(1), default=10000, help="samples per cell (default 10000)")
    p.add_argument("--class-accuracy", action="store_true",
                   help="also class-conditional samples (labelled image data)")  # fmt: skip
    p.add_argument("--guidance", type=float, default=0.0)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."))
    args = p.parse_args(argv)
    for d in [args.teacher, *args.students]:
        if d is not None and not (d / "config.json").exists():
            p.error(f"{d} is not a run's work dir (no config.json)")
    rows = []
    if args.teacher is not None:
        rows.append(measure(args.teacher, None, args.n, args.class_accuracy, args.guidance))
    for student in args.students:
        for k in args.steps:
            rows.append(measure(student, k, args.n, args.class_accuracy, args.guidance))
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distill_table.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = table(rows, args.steps)
    (args.out / "distill_table.md").write_text(text + "\n")
    print(text)
    return 0


__all__ = ["main", "measure", "support_share", "table"]
