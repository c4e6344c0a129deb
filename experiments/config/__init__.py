"""Experiment configuration: frozen dataclasses, ``key=value`` overrides, JSON.

``load(name, overrides)`` gives a checked :class:`Config`; ``read(path)`` the one a
work dir was trained with. See :mod:`experiments.config._overrides` for the override
syntax and :mod:`experiments.config._validate` for what is checked where.
"""

from ._overrides import CONFIG_DIR as CONFIG_DIR
from ._overrides import ConfigError as ConfigError
from ._overrides import apply_overrides as apply_overrides
from ._overrides import differences as differences
from ._overrides import from_dict as from_dict
from ._overrides import get as get
from ._overrides import get_named as get_named
from ._overrides import keys as keys
from ._overrides import named_configs as named_configs
from ._overrides import read as read
from ._overrides import save as save
from ._overrides import to_dict as to_dict
from ._schema import Config as Config
from ._schema import DataConfig as DataConfig
from ._schema import DistillConfig as DistillConfig
from ._schema import EvalConfig as EvalConfig
from ._schema import MLPConfig as MLPConfig
from ._schema import ModelConfig as ModelConfig
from ._schema import NCSNppConfig as NCSNppConfig
from ._schema import SDEConfig as SDEConfig
from ._schema import TrainConfig as TrainConfig
from ._schema import UNetConfig as UNetConfig
from ._validate import validate as validate


def load(name_or_file: str, overrides: list[str] = ()) -> Config:
    """A named config (``checkerboard``) or a Python file, with overrides applied and
    the result checked (:func:`validate`)."""
    return validate(apply_overrides(get_named(name_or_file), list(overrides)))
