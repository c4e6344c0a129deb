"""Evaluation of a trained :class:`~experiments.run.Run`: samples, log-likelihoods,
inpainting, sample quality and the run report. Every function takes a Run and writes
its files into ``run.workdir``."""

from .inpaint import MASKS as MASKS
from .inpaint import inpaint as inpaint
from .inpaint import inpaint_mask as inpaint_mask
from .likelihood import elbo as elbo
from .likelihood import likelihood as likelihood
from .likelihood import validation_nll as validation_nll
from .quality import sample_quality as sample_quality
from .report import rebuild_report as rebuild_report
from .report import report as report
from .report import training_report as training_report
from .sample import progress_samples as progress_samples
from .sample import sample as sample
