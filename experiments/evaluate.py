"""Evaluation of a trained run: samples, test log-likelihood, and a short report.

Every batch is split over all devices of all processes (``experiments.distributed``):
the jitted samplers then run as one SPMD program, so batch-joint and per-sample
adaptive step control alike take the same steps on every device. Process 0 writes the
files; every process returns the same results.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import jax
import numpy as np
from tqdm.auto import tqdm

import networks
import samplers
from experiments import config as config_lib
from experiments import distributed, plotting, registry
from experiments.data import _dequantize as dq
from experiments.train import load_state

SAMPLERS = {
    "ode": samplers.sample_ode,
    "sde": samplers.sample_sde,
    "pc": samplers.sample_pc,
    "edm": samplers.sample_edm,
}


def sample(
    workdir: pathlib.Path,
    *,
    method: str | None = None,
    solver: str | None = None,
    steps: int | None = None,
    n: int | None = None,
    seed: int = 0,
    labels: int | str | None = None,
    guidance: float = 0.0,
    progress: bool = True,
) -> dict:
    """Draw ``n`` samples with the EMA weights; writes samples.npz and samples.png.

    A class-conditional run (``model.num_classes``) samples class ``labels`` (an int, or
    ``"all"``: ``n / num_classes`` of each class, one class per grid row) with
    classifier-free guidance weight ``guidance`` (:math:`w`: the score
    :math:`(1 + w) s(x | c) - w s(x)`; 0 = plain conditional); ``labels=None`` samples
    the unconditional (null-label) model.
    """
    workdir = pathlib.Path(workdir)
    setup, state, ckpt_step = load_state(workdir)
    e = setup.cfg.eval
    method, n = method or e.method, n or e.n_samples
    if method not in SAMPLERS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(SAMPLERS)}")
    requested = _requested_labels(setup, labels, n)
    if requested is None and guidance:
        raise ValueError("guidance needs a class to guide towards: give labels (--class)")
    solver_name = solver or (e.solver if method == "ode" else "euler")
    mesh = distributed.mesh()
    score = setup.score_function(state)
    kwargs = dict(sde=setup.sde, eps=e.sample_eps)
    if method == "edm":  # its own Heun steps on the Karras grid (+ churn)
        if solver is not None:
            raise ValueError("--method edm takes Heun steps of its own: drop --solver")
        solver_name = "edm heun" + (f", churn {e.s_churn:g}" if e.s_churn else "")
        kwargs.update(
            steps=steps or e.steps,
            s_churn=e.s_churn,
            s_tmin=e.s_tmin,
            s_tmax=e.s_tmax,
            s_noise=e.s_noise,
        )
    elif method == "ode":
        kwargs["solver"] = registry.solver(solver_name)
        kwargs.update(rtol=e.rtol, atol=e.atol) if steps is None else kwargs.update(steps=steps)
    else:
        kwargs.update(solver=registry.solver(solver_name), steps=steps or e.steps)
    chunks, nfe, key = [], 0, jax.random.key(seed)
    start = time.perf_counter()
    sizes = [min(e.batch_size, n - i) for i in range(0, n, e.batch_size)]
    progress = progress and distributed.is_main()
    for i, size in enumerate(tqdm(sizes, desc="sampling", disable=not progress, unit="batch")):
        padded = distributed.padded_size(size, mesh)
        score_i = score
        if requested is not None:
            chunk = requested[i * e.batch_size : i * e.batch_size + size]
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], padded - size)])
            score_i = samplers.classifier_free_guidance(
                score, chunk, setup.cfg.model.num_classes, guidance=guidance
            )
        x, stats = SAMPLERS[method](
            score_fn=distributed.batch_sharded_score(score_i, mesh),
            shape=(padded, *setup.source.shape),
            key=jax.random.fold_in(key, i),
            **kwargs,
        )
        chunks.append(distributed.to_host(x)[:size])
        nfe = max(nfe, int(stats["nfe"]))
    x = np.concatenate(chunks)
    seconds = time.perf_counter() - start
    info = {
        "method": method,
        "solver": solver_name,
        "n": n,
        "nfe": nfe,
        "seed": seed,
        "seconds": seconds,
        "checkpoint_step": ckpt_step,
    }
    if requested is not None:
        info.update(labels=labels, guidance=guidance)
    if setup.source.to_data is not None:  # undo the fixed maps: samples in data space
        x = setup.source.to_data(x)
    if not distributed.is_main():
        return info
    arrays = {"samples": x} if requested is None else {"samples": x, "labels": requested}
    np.savez(workdir / "samples.npz", **arrays)
    title = f"{setup.cfg.data.name}: {method} ({solver_name}), NFE {nfe}"
    if requested is not None:
        title += f", class {labels}, guidance {guidance:g}"
    if setup.source.discrete:
        shown, ncol = slice(0, 64), 8
        if labels == "all":  # one class per row
            ncol = min(n // setup.cfg.model.num_classes, 16)
            rows = np.arange(n).reshape(setup.cfg.model.num_classes, -1)[:, :ncol]
            shown = rows.reshape(-1)
        images = x[shown].reshape(-1, *(setup.source.image_shape or setup.source.shape))
        plotting.image_grid(
            images, workdir / "samples.png", setup.source.data_range, title=title, ncol=ncol
        )
    else:
        reference = setup.source.test(setup.cfg.train.seed)[:n]
        if setup.source.to_data is not None:
            reference = setup.source.to_data(reference)
        plotting.scatter_grid(
            {"data (test)": reference, "samples": x}, workdir / "samples.png", title=title
        )
    (workdir / "samples.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def sample_quality(workdir: pathlib.Path, *, progress: bool = True) -> dict:
    """Offline sample metrics of the run's ``samples.npz`` against the test images:
    Fréchet distance, KID and precision/recall in the features of a small classifier
    trained on the run's training images (cached as ``classifier.npz`` in the workdir;
    :mod:`experiments.sample_metrics`), the classifier's accuracy on the test set, and
    for class-conditional samples the fraction classified as the requested class.
    Writes ``sample_metrics.json``."""
    from experiments import sample_metrics
    from experiments.data import make_source

    workdir = pathlib.Path(workdir)
    path = workdir / "samples.npz"
    if not path.exists():
        raise FileNotFoundError(f"{workdir} has no samples.npz: run scoresde sample first")
    cfg = config_lib.read(workdir / "config.json")
    raw = make_source(cfg.data)  # the images themselves, in [-1, 1]
    if not raw.discrete or raw.num_classes is None:
        raise ValueError(
            f"sample metrics need labelled image data (digits, mnist, cifar10), got "
            f"data.name={cfg.data.name!r}"
        )
    seed = cfg.train.seed
    classifier = sample_metrics.load_or_train(
        workdir / "classifier.npz",
        raw.train_batch(seed, 0, raw.n_train),  # every training image once
        raw.train_labels(seed, 0, raw.n_train),
        num_classes=raw.num_classes,
        progress=progress,
    )
    saved = np.load(path, allow_pickle=False)
    samples = np.clip(saved["samples"].reshape(-1, *raw.shape), *raw.data_range)
    out = sample_metrics.sample_metrics(
        classifier,
        samples,
        raw.test(seed),
        labels=saved["labels"] if "labels" in saved else None,
        reference_labels=raw.test_labels,
    )
    out["features"] = "local classifier (experiments.sample_metrics), cached in classifier.npz"
    (workdir / "sample_metrics.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def _requested_labels(setup, labels, n: int) -> np.ndarray | None:
    """The class of each of ``n`` samples, or None for unconditional sampling."""
    if labels is None:
        return None
    k = setup.cfg.model.num_classes
    if not k:
        raise ValueError(
            f"--class needs a class-conditional run (model.num_classes > 0); "
            f"{setup.cfg.data.name} was trained without labels"
        )
    if labels == "all":
        if n % k:
            raise ValueError(f"--class all needs n divisible by {k} classes, got n={n}")
        return np.repeat(np.arange(k, dtype=np.int32), n // k)
    try:
        label = int(labels)
    except (TypeError, ValueError):
        raise ValueError(
            f"class must be an integer in [0, {k - 1}] or 'all', got {labels!r}"
        ) from None
    if not 0 <= label < k:
        raise ValueError(f"class must lie in [0, {k - 1}] or be 'all', got {labels!r}")
    return np.full(n, label, dtype=np.int32)


def _dequantizer(setup):
    r"""For ``eval.dequantization=truncated_normal`` (i-DODE, Zheng et al. 2023): a map
    from a uniformly dequantised batch to ``(x_eps, correction)``, the ODE's start
    :math:`a(\epsilon) y` with :math:`y` the bin centre plus truncated-normal noise of
    scale :math:`s(\epsilon) / a(\epsilon)`, and the per-example terms that make
    ``log p_eps(x_eps) + correction`` the bound :math:`\log p(y) - \log q(y | k)`
    expressed like a uniform-noise log-density (plus :math:`-D \log w`), so that nats and
    bits/dim are computed one way for both. ``None`` for uniform noise (the data as is,
    with the ODE started at ``eps`` from it)."""
    e, src = setup.cfg.eval, setup.source
    if e.dequantization == "uniform":
        return None
    if src.to_data is not None or src.log_det_fn is not None or src.log_det:
        raise ValueError(
            "eval.dequantization=truncated_normal needs a model of the images themselves; "
            "this run maps them first (data.whiten / data.gaussianize)"
        )
    eps, levels, data_range = e.likelihood_eps, src.n_levels, src.data_range
    sigma = dq.truncated_normal_sigma(setup.sde, eps)
    uniform = dq.uniform_log_q(src.dim, levels, data_range)

    def apply(chunk, rng):
        k = dq.from_continuous(chunk, levels, data_range)
        y, log_q = dq.truncated_normal_dequantize(rng, k, levels, data_range, sigma=sigma)
        x_eps, log_det = dq.to_ode_start(y, setup.sde, eps)
        return x_eps.astype(np.float32), log_det - log_q + uniform

    return apply


def likelihood(
    workdir: pathlib.Path,
    *,
    split: str = "test",
    solver: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    n: int | None = None,
    progress: bool = True,
) -> dict:
    """Test NLL (nats per example, and bits/dim for discrete data); writes likelihood.json."""
    workdir = pathlib.Path(workdir)
    setup, state, ckpt_step = load_state(workdir)
    e = setup.cfg.eval
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    solver_name = solver or e.solver
    rtol, atol = rtol or e.rtol, atol or e.atol
    n = n or e.n_likelihood or None
    mesh = distributed.mesh()
    score_fn = distributed.batch_sharded_score(setup.score_function(state), mesh)
    progress = progress and distributed.is_main()
    logps, jacobians, nfes, start = [], [], [], time.perf_counter()
    dequantize = _dequantizer(setup) if setup.source.discrete else None
    # with a histogram base, also the base alone (closed form, same points): what the
    # network adds to the likelihood
    base = setup.param if isinstance(setup.param, networks.HistogramResidual) else None
    base_logp = (
        None
        if base is None
        else jax.jit(lambda y: base.base_log_density(setup.sde, y, e.likelihood_eps))
    )
    base_logps = []
    for r in range(e.dequant_repeats if setup.source.discrete else 1):
        data = getattr(setup.source, split)(setup.cfg.train.seed + r)[:n]
        batches = range(0, len(data), e.batch_size)
        for i in tqdm(batches, desc=f"likelihood {r + 1}", disable=not progress, unit="batch"):
            chunk = data[i : i + e.batch_size]
            # the model's density of the data: the log-Jacobian of the fixed maps between
            # data and model (whitening, Gaussianization; 0 if none), and for
            # truncated-normal noise its own bound terms (see _dequantizer)
            correction = setup.source.log_jacobian(chunk)
            if dequantize is not None:
                chunk, extra = dequantize(chunk, np.random.default_rng([r, i, 5]))
                correction = correction + extra
            x, size = distributed.shard_batch(chunk, mesh)
            logp, stats = samplers.log_likelihood(
                score_fn=score_fn,
                sde=setup.sde,
                x=x,
                key=jax.random.key(1000 * r + i),
                solver=registry.solver(solver_name),
                rtol=rtol,
                atol=atol,
                eps=e.likelihood_eps,
                divergence=e.divergence,
                n_probes=e.n_probes,
            )
            logps.append(distributed.to_host(logp)[:size].astype(np.float64))
            if base_logp is not None:
                base_logps.append(np.asarray(base_logp(jax.numpy.asarray(chunk)), np.float64))
            jacobians.append(correction)
            nfes.append(int(stats["nfe"]))
    logp = np.concatenate(logps) + np.concatenate(jacobians)
    nll = -logp
    out = {
        "split": split,
        "n": int(len(nll)),
        "checkpoint_step": ckpt_step,
        "nll_nats": float(nll.mean()),
        "nll_nats_stderr": float(nll.std(ddof=1) / math.sqrt(len(nll))),
        "nll_nats_median": float(np.median(nll)),
        "nll_nats_p99": float(np.percentile(nll, 99)),
        "nfe": float(np.mean(nfes)),
        "seconds": time.perf_counter() - start,
        "settings": {
            "solver": solver_name,
            "rtol": rtol,
            "atol": atol,
            "eps": e.likelihood_eps,
            "divergence": e.divergence,
            "n_probes": e.n_probes,
            "step_control": "batch-joint, worst-sample norm",
            "batch_size": e.batch_size,
            "whiten": setup.cfg.data.whiten,
            "gaussianize": setup.cfg.data.gaussianize,
        },
    }
    if setup.source.discrete:
        bpd = np.asarray(
            samplers.bits_per_dim(
                logp,
                dim=setup.source.dim,
                n_levels=setup.source.n_levels,
                data_range=setup.source.data_range[1] - setup.source.data_range[0],
            )
        )
        out.update(
            bits_per_dim=float(bpd.mean()),
            bits_per_dim_stderr=float(bpd.std(ddof=1) / math.sqrt(len(bpd))),
            bits_per_dim_median=float(np.median(bpd)),
            dequantization=f"{e.dequantization.replace('_', '-')}, "
            f"{e.dequant_repeats} draw(s) per image",
        )
    if base_logps:
        base_nll = -(np.concatenate(base_logps) + np.concatenate(jacobians))
        out["histogram_base_alone"] = {
            "nll_nats": float(base_nll.mean()),
            "bits_per_dim": float(
                np.mean(
                    samplers.bits_per_dim(
                        -base_nll,
                        dim=setup.source.dim,
                        n_levels=setup.source.n_levels,
                        data_range=setup.source.data_range[1] - setup.source.data_range[0],
                    )
                )
            ),
            "network_gain_bits_per_dim_stderr": float(
                (base_nll - nll).std(ddof=1)
                / (setup.source.dim * math.log(2) * math.sqrt(len(nll)))
            ),
        }
    if setup.source.entropy is not None:
        out.update(
            entropy_nats=setup.source.entropy, kl_nats=out["nll_nats"] - setup.source.entropy
        )
    if distributed.is_main():
        (workdir / "likelihood.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def _loss_curve(workdir: pathlib.Path) -> None:
    path = workdir / "metrics.jsonl"
    if path.exists():
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln]
        plotting.loss_curve(rows, workdir / "loss.png")


def report(workdir: pathlib.Path, train_info: dict, sample_info: dict, lik: dict) -> str:
    """Write report.md summarising the run."""
    workdir = pathlib.Path(workdir)
    cfg = json.loads((workdir / "config.json").read_text())
    _loss_curve(workdir)
    lines = [
        f"# Run report: {cfg['data']['name']}",
        "",
        f"- model: {cfg['model']['architecture']} ({cfg['model']['parametrisation']} "
        f"prediction), SDE {cfg['sde']['name']}, {cfg['train']['steps']} steps of batch "
        f"{cfg['train']['batch_size']}, lr {cfg['train']['lr']} ({cfg['train']['schedule']}), "
        f"EMA {cfg['train']['ema_decay']}, loss weighting {cfg['train']['weighting']}",
        f"- training time: {train_info.get('train_seconds', float('nan')):.0f} s"
        + (
            f" (resumed from step {train_info['resumed_from']})"
            if train_info.get("resumed_from")
            else ""
        ),
        f"- evaluated checkpoint: step {lik['checkpoint_step']}",
        "",
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
    lines += [
        f"| likelihood NFE (mean per batch) | {lik['nfe']:.0f} ({s['solver']}, rtol={s['rtol']}, "
        f"atol={s['atol']}, eps={s['eps']}, {s['divergence']} divergence) |",
        f"| sampling | {sample_info['method']} ({sample_info['solver']}), "
        f"NFE {sample_info['nfe']}, "
        f"{sample_info['n']} samples in {sample_info['seconds']:.1f} s |",
        "",
        "![samples](samples.png)",
        "",
        "![training loss](loss.png)",
        "",
    ]
    text = "\n".join(lines)
    (workdir / "report.md").write_text(text)
    return text


MASKS = ("left", "right", "top", "bottom", "center", "random:P")


def inpaint_mask(spec: str, image_shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A 0/1 mask of ``image_shape`` ``(H, W, C)``; 1 marks the pixels that are kept.

    ``left``/``right``/``top``/``bottom`` keep that half, ``center`` hides the central
    square of half the side, ``random:P`` keeps each pixel with probability ``P``.
    """
    h, w = image_shape[0], image_shape[1]
    mask = np.zeros(image_shape, np.float32)
    if spec == "left":
        mask[:, : w // 2] = 1
    elif spec == "right":
        mask[:, w // 2 :] = 1
    elif spec == "top":
        mask[: h // 2] = 1
    elif spec == "bottom":
        mask[h // 2 :] = 1
    elif spec == "center":
        mask[:] = 1
        mask[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = 0
    elif spec.startswith("random:"):
        try:
            p = float(spec.split(":", 1)[1])
        except ValueError:
            p = -1.0
        if not 0 <= p <= 1:
            raise ValueError(f"--inpaint random:P needs P in [0, 1], got {spec!r}")
        keep = np.random.default_rng(seed).random(image_shape[:2]) < p
        mask[keep] = 1
    else:
        raise ValueError(f"unknown --inpaint mask {spec!r}; choose one of {', '.join(MASKS)}")
    return mask


def inpaint(
    workdir: pathlib.Path,
    *,
    mask: str | np.ndarray = "left",
    n: int = 8,
    fills: int = 4,
    steps: int | None = None,
    solver: str | None = None,
    corrector_steps: int = 0,
    snr: float = 0.16,
    resample: int = 1,
    seed: int = 0,
) -> dict:
    """Fill the hidden pixels of ``n`` test images (``fills`` samples each) with the
    replacement method (``samplers.sample_inpaint``); writes inpaint.png (rows: masked
    input, ``fills`` completions, original) and inpaint.npz."""
    workdir = pathlib.Path(workdir)
    setup, state, ckpt_step = load_state(workdir)
    src, e = setup.source, setup.cfg.eval
    if not src.discrete:
        raise ValueError(f"inpainting needs image data; {setup.cfg.data.name} is not images")
    if src.to_data is not None:
        raise ValueError(
            f"this run models whitened data (data.whiten={setup.cfg.data.whiten}), where a "
            "pixel mask is not a coordinate mask; inpaint a run with data.whiten=none"
        )
    image_shape = src.image_shape or src.shape
    m = inpaint_mask(mask, image_shape, seed) if isinstance(mask, str) else np.asarray(mask)
    if m.shape != tuple(image_shape):
        raise ValueError(f"the mask must have the image shape {image_shape}, got {m.shape}")
    images = np.asarray(src.test(setup.cfg.train.seed))[:n]
    known = np.repeat(images, fills, axis=0)  # [n * fills, *shape]
    start = time.perf_counter()
    x, stats = samplers.sample_inpaint(
        score_fn=setup.score_function(state),
        sde=setup.sde,
        x_known=jax.numpy.asarray(known),
        mask=m.reshape(src.shape),
        key=jax.random.key(seed),
        solver=registry.solver(solver or "euler"),
        steps=steps or e.steps,
        eps=e.sample_eps,
        corrector_steps=corrector_steps,
        snr=snr,
        resample=resample,
        denoise=True,
    )
    x = np.asarray(x)
    flat_mask = m.reshape(src.shape)
    kept_exactly = bool(np.all((x == known)[..., flat_mask.astype(bool)]))
    info = {
        "mask": mask if isinstance(mask, str) else "array",
        "n_images": int(len(images)),
        "fills": fills,
        "nfe": int(stats["nfe"]),
        "seconds": time.perf_counter() - start,
        "known_pixels_kept_exactly": kept_exactly,
        "checkpoint_step": ckpt_step,
    }
    if distributed.is_main():
        shown = np.asarray(src.data_range[0] + (images - src.data_range[0]) * flat_mask)
        rows = [shown] + [x[j::fills] for j in range(fills)] + [images]
        grid = np.stack(rows, axis=1).reshape(-1, *image_shape)  # image by image: columns
        plotting.image_grid(
            grid,
            workdir / "inpaint.png",
            src.data_range,
            title=f"inpainting ({info['mask']}): masked | {fills} fills | original",
            ncol=fills + 2,
        )
        np.savez(workdir / "inpaint.npz", samples=x, known=known, mask=m)
        (workdir / "inpaint.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
