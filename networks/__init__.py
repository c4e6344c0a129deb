"""Flax (NNX) score networks and the parametrisations that turn them into score
functions. (Filled in by the training issue.)"""

__all__: list[str] = []
