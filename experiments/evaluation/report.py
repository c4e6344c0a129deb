"""``report.md`` and ``loss.png``: a run's summary from its config and results."""

from __future__ import annotations

import json

from experiments import plotting
from experiments.run import Run


def _loss_curve(run: Run) -> None:
    path = run.workdir / "metrics.jsonl"
    if path.exists():
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln]
        plotting.loss_curve(rows, run.workdir / "loss.png")


def _time_sampling(tc) -> str:
    """``train.t_sampling`` with the parameters it uses."""
    if tc.t_sampling == "logit_normal":
        return f"logit_normal({tc.logit_mean:g}, {tc.logit_std:g})"
    if tc.t_sampling == "lognormal":
        return f"lognormal({tc.p_mean:g}, {tc.p_std:g})"
    return tc.t_sampling


def _table(lik: dict, sample_info: dict) -> list[str]:
    lines = [
        "| metric | value |",
        "|---|---|",
        f"| test NLL (nats/example) | {lik['nll_nats']:.4f} ± {lik['nll_nats_stderr']:.4f} "
        f"(median {lik['nll_nats_median']:.4f}, n={lik['n']}) |",
    ]
    if "bits_per_dim" in lik:
        lines.append(
            f"| bits/dim | {lik['bits_per_dim']:.4f} ± {lik['bits_per_dim_stderr']:.4f} "
            f"(median {lik['bits_per_dim_median']:.4f}) |"
        )
    if "entropy_nats" in lik:
        lines.append(f"| exact entropy H (nats) | {lik['entropy_nats']:.4f} |")
        lines.append(f"| KL = NLL - H (nats) | {lik['kl_nats']:.4f} |")
    s = lik["settings"]
    return lines + [
        f"| likelihood NFE (mean per batch) | {lik['nfe']:.0f} ({s['solver']}, rtol={s['rtol']}, "
        f"atol={s['atol']}, eps={s['eps']}, {s['divergence']} divergence) |",
        f"| sampling | {sample_info['method']} ({sample_info['solver']}), "
        f"NFE {sample_info['nfe']}, "
        f"{sample_info['n']} samples in {sample_info['seconds']:.1f} s |",
    ]


def report(run: Run, train_info: dict, sample_info: dict, lik: dict) -> str:
    """Write report.md (and loss.png) in ``run.workdir``; returns the text."""
    cfg, m, tc = run.cfg, run.cfg.model, run.cfg.train
    _loss_curve(run)
    resumed = train_info.get("resumed_from")
    lines = [
        f"# Run report: {cfg.data.name}",
        "",
        f"- model: {m.architecture} ({m.parametrisation} prediction), SDE {cfg.sde.name}, "
        f"{tc.steps} steps of batch {tc.batch_size}, lr {tc.lr} ({tc.schedule}), "
        f"EMA {tc.ema_decay}, loss {tc.loss}"
        + (f" (weighting {tc.weighting}, t {_time_sampling(tc)})" if tc.loss == "dsm" else ""),
        f"- training time: {train_info.get('train_seconds', float('nan')):.0f} s"
        + (f" (resumed from step {resumed})" if resumed else ""),
        f"- evaluated checkpoint: step {lik['checkpoint_step']}",
        "",
        *_table(lik, sample_info),
        "",
        "![samples](samples.png)",
        "",
        "![training loss](loss.png)",
        "",
    ]
    text = "\n".join(lines)
    (run.workdir / "report.md").write_text(text)
    return text
