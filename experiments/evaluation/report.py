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
    s, si = lik["settings"], sample_info
    steps = f"{s['steps']} steps" if s.get("steps") else f"rtol={s['rtol']}, atol={s['atol']}"
    spacing = f", {si['steps']} steps ({si['grid']} grid)" if si.get("steps") else ""
    return lines + [
        f"| likelihood NFE (mean per batch) | {lik['nfe']:.0f} ({s['solver']}, {steps}, "
        f"eps={s['eps']}, {s['divergence']} divergence; checkpoint step "
        f"{lik['checkpoint_step']}) |",
        f"| sampling | {si['method']} ({si['solver']}{spacing}), NFE {si['nfe']}, "
        f"{si['n']} samples in {si['seconds']:.1f} s (checkpoint step "
        f"{si['checkpoint_step']}, seed {si['seed']}) |",
    ]


def rebuild_report(run: Run) -> str | None:
    """Rewrite report.md from what the work dir holds now: ``train.json`` and the
    latest ``samples.json`` and ``likelihood.json`` (the picture it embeds is the latest
    ``samples.png``, so the two always match); the training part alone when either
    evaluation is missing. None (nothing written) for a run without ``train.json``."""
    from experiments.evaluation import outputs

    train_info = outputs.read(run.workdir, "train.json")
    if train_info is None:
        return None
    s, lik = outputs.read(run.workdir, "samples.json"), outputs.read(run.workdir, "likelihood.json")
    if s is None or lik is None:
        return training_report(run, train_info)
    return report(run, train_info, s, lik)


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
        f"- evaluated checkpoint: step {lik['checkpoint_step']}"
        + (
            f" (the samples: step {sample_info['checkpoint_step']})"
            if sample_info.get("checkpoint_step", lik["checkpoint_step"]) != lik["checkpoint_step"]
            else ""
        ),
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
