"""Studies: measured comparisons built on the pipeline, each behind one command.

- :mod:`.oracle` (``scoresde oracle``): every sampler and the likelihood on the exact
  score of a Gaussian mixture;
- :mod:`.vs_gan` (``scoresde experiment vs-gan``): score-based diffusion against a GAN
  baseline on data whose truth is known.

A study trains through :mod:`experiments.training` and scores through
:mod:`experiments.evaluation`; what is its own is the design of the measurement, its
result rows and its report.
"""
