"""The study's results as typed rows, their summaries, and their JSON form.

A :class:`TrainedRun` is one ``(family, lr, seed)`` training run with the quality of
each sampler it was scored with; an :class:`Entry` (family and sampler, never a label
parsed back) is one line of the quality tables, and :class:`Summary` its spread over
seeds x learning rates; a :class:`CostRow` is one line of the sampling-cost table.
:class:`StudyResults` holds them all and round-trips through ``results.json``
(:meth:`StudyResults.to_json`, :meth:`StudyResults.from_json`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

DIFFUSION = "diffusion"  # the score model's family
GENERATOR = "generator"  # a GAN's one sampler
GAN_FAMILIES = {"ns": "GAN", "r1": "GAN+R1", "wgan-gp": "WGAN-GP"}  # GAN loss -> family


@dataclass(frozen=True)
class Entry:
    """One model-and-sampler line of the tables."""

    family: str  # DIFFUSION or one of GAN_FAMILIES' values
    sampler: str  # the diffusion sampler's name; GENERATOR for a GAN

    @property
    def is_diffusion(self) -> bool:
        return self.family == DIFFUSION

    @property
    def label(self) -> str:
        return f"{DIFFUSION}, {self.sampler}" if self.is_diffusion else self.family


@dataclass(frozen=True)
class Stats:
    median: float
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, values) -> Stats:
        v = np.asarray(values, np.float64)
        return cls(*(float(f(v)) for f in (np.median, np.mean, np.std, np.min, np.max)))

    def fmt(self, digits: int = 3) -> str:
        """``median [min, max]``."""
        return f"{self.median:.{digits}f} [{self.min:.{digits}f}, {self.max:.{digits}f}]"


@dataclass(frozen=True)
class TrainedRun:
    """One training run: its cost, loss curves, sample quality per sampler (``quality``:
    sampler -> the task's metrics), test NLL (diffusion only) and parameter count."""

    family: str
    lr: float
    seed: int
    train_seconds: float  # including the first chunk's compilation
    step_ms: float  # per step, after the first chunk
    final_loss: float
    curves: dict[str, list[float]]  # "step" and the loss series ("loss"; "d_loss", "g_loss")
    quality: dict[str, dict]
    nll: dict | None
    params: int

    def entries(self) -> list[Entry]:
        return [Entry(self.family, sampler) for sampler in self.quality]


@dataclass(frozen=True)
class LrSummary:
    tv: Stats
    hit: Stats
    mmd2: Stats


@dataclass(frozen=True)
class Summary:
    """An entry's metrics over all seeds x learning rates (and per learning rate)."""

    family: str
    sampler: str
    runs: int
    all_hit: int  # runs that hit every mode
    tv: Stats
    hit: Stats
    mmd2: Stats
    train_seconds: Stats
    step_ms: Stats
    per_lr: dict[str, LrSummary]  # f"{lr:g}" -> spreads over seeds
    nll_nats: Stats | None = None  # diffusion only

    @property
    def entry(self) -> Entry:
        return Entry(self.family, self.sampler)


@dataclass(frozen=True)
class CostRow:
    """NFE and time per sample of one sampler, on one trained model."""

    family: str
    sampler: str
    lr: float
    nfe_per_sample: int
    batch: int
    seconds_per_batch: float
    microseconds_per_sample: float
    quality: dict  # the task's metrics without the per-mode shares

    @property
    def entry(self) -> Entry:
        return Entry(self.family, self.sampler)

    @property
    def method(self) -> str:
        if self.entry.is_diffusion:
            return f"{DIFFUSION} (lr {self.lr:g}): {self.sampler}"
        return f"{self.family} {GENERATOR} (lr {self.lr:g})"


@dataclass(frozen=True)
class TaskResult:
    """Everything measured on one data set."""

    kind: str  # "mixture" | "classes"
    sharpness: str  # the quality key that says how sharp samples are
    score_config: dict
    gan_configs: dict[str, dict]  # family -> GANConfig fields
    truth: dict
    reference: dict  # quality of real data
    runs: list[TrainedRun]
    summary: list[Summary]
    sampling_cost: list[CostRow]
    seconds: float = 0.0

    def family_runs(self, family: str) -> list[TrainedRun]:
        return [r for r in self.runs if r.family == family]

    def params(self, family: str) -> int:
        return self.family_runs(family)[0].params


@dataclass(frozen=True)
class StudyResults:
    settings: dict  # Settings fields and "quick"
    machine: str
    datasets: dict[str, TaskResult]
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    complete: bool = False

    def to_json(self) -> dict:
        """Plain JSON values (non-finite numbers become null)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, obj: dict) -> StudyResults:
        datasets = {name: _task_from_json(res) for name, res in obj["datasets"].items()}
        return cls(**{**obj, "datasets": datasets})


def _stats(d: dict | None) -> Stats | None:
    return None if d is None else Stats(**{k: math.nan if v is None else v for k, v in d.items()})


def _summary_from_json(d: dict) -> Summary:
    per_lr = {
        lr: LrSummary(**{k: _stats(v) for k, v in s.items()}) for lr, s in d["per_lr"].items()
    }
    stats = {k: _stats(d[k]) for k in ("tv", "hit", "mmd2", "train_seconds", "step_ms", "nll_nats")}
    return Summary(**{**d, **stats, "per_lr": per_lr})


def _task_from_json(d: dict) -> TaskResult:
    return TaskResult(
        **{
            **d,
            "runs": [TrainedRun(**r) for r in d["runs"]],
            "summary": [_summary_from_json(s) for s in d["summary"]],
            "sampling_cost": [CostRow(**c) for c in d["sampling_cost"]],
        }
    )


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _lr_summary(rows: list[TrainedRun], entry: Entry) -> LrSummary:
    q = [r.quality[entry.sampler] for r in rows]
    return LrSummary(*(Stats.of([x[k] for x in q]) for k in ("tv", "hit", "mmd2")))


def summarise(runs: list[TrainedRun], families: list[str], lrs) -> list[Summary]:
    """Per entry (every sampler of every family, in order), over all seeds x lrs and
    per lr: spreads of TV, modes hit and MMD^2, training cost, and the NLL."""
    out = []
    for family in families:
        rows = [r for r in runs if r.family == family]
        for entry in rows[0].entries():
            q = [r.quality[entry.sampler] for r in rows]
            overall = _lr_summary(rows, entry)
            nll = [r.nll["nll_nats"] for r in rows if r.nll is not None]
            out.append(
                Summary(
                    family=entry.family,
                    sampler=entry.sampler,
                    runs=len(rows),
                    all_hit=int(sum(x["hit"] == x["of"] for x in q)),
                    tv=overall.tv,
                    hit=overall.hit,
                    mmd2=overall.mmd2,
                    train_seconds=Stats.of([r.train_seconds for r in rows]),
                    step_ms=Stats.of([r.step_ms for r in rows]),
                    per_lr={
                        f"{lr:g}": _lr_summary([r for r in rows if r.lr == lr], entry) for lr in lrs
                    },
                    nll_nats=Stats.of(nll) if nll else None,
                )
            )
    return out


def best_lr(runs: list[TrainedRun], entry: Entry) -> float:
    """The learning rate with the lowest median TV of ``entry`` over seeds."""
    by_lr: dict[float, list[float]] = {}
    for r in runs:
        if r.family == entry.family:
            by_lr.setdefault(r.lr, []).append(r.quality[entry.sampler]["tv"])
    return min(by_lr, key=lambda lr: np.median(by_lr[lr]))
