"""``report.md`` and ``loss.png``: a run's summary from its config and results
(:func:`report` after an evaluation, :func:`training_report` for ``train --no-eval``)."""

from __future__ import annotations

from experiments import logs
from experiments.run import Run


def _loss_curve(run: Run) -> bool:
    """Redraw ``loss.png`` from the whole of ``metrics.jsonl``; whether there was one."""
    if not (run.workdir / logs.METRICS).exists() or not logs.read_metrics(run.workdir):
        return False
    logs.plot(run.workdir)
    return True


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


def _summary(run: Run, train_info: dict) -> list[str]:
    """The title and the lines on the model and its training."""
    cfg, m, tc = run.cfg, run.cfg.model, run.cfg.train
    resumed = train_info.get("resumed_from")
    return [
        f"# Run report: {cfg.data.name}",
        "",
        f"- model: {m.architecture} ({m.parametrisation} prediction), SDE {cfg.sde.name}, "
        f"{tc.steps} steps of batch {tc.batch_size}, lr {tc.lr} ({tc.schedule}), "
        f"EMA {tc.ema_decay}, loss {tc.loss}"
        + (f" (weighting {tc.weighting}, t {_time_sampling(tc)})" if tc.loss == "dsm" else ""),
        f"- training time: {train_info.get('train_seconds', float('nan')):.0f} s"
        + (f" (resumed from step {resumed})" if resumed else ""),
    ]


def training_report(run: Run, train_info: dict) -> str:
    """Write report.md (and loss.png) in ``run.workdir`` for a run trained without the
    final evaluation (``scoresde train --no-eval``); returns the text."""
    best = train_info.get("best_val_nll")
    lines = [
        *_summary(run, train_info),
        f"- trained to step {train_info.get('steps', run.step)}"
        + (
            f"; best validation NLL {best:.4f} nats at step {run.step} (best/), the "
            "weights sample and likelihood use"
            if best is not None
            else ""
        ),
        f"- not evaluated (--no-eval): `scoresde sample --workdir {run.workdir}` and "
        f"`scoresde likelihood --workdir {run.workdir}` add samples.png and likelihood.json",
        "",
    ]
    if _loss_curve(run):
        lines += ["![training loss](loss.png)", ""]
    text = "\n".join(lines)
    (run.workdir / "report.md").write_text(text)
    return text


def report(run: Run, train_info: dict, sample_info: dict, lik: dict) -> str:
    """Write report.md (and loss.png) in ``run.workdir``; returns the text."""
    _loss_curve(run)
    lines = [
        *_summary(run, train_info),
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
