"""Dotted ``key=value`` overrides, named configs, and the JSON round trip.

A named config is a Python file ``experiments/configs/NAME.py`` (or any file) whose
``get_config()`` returns a :class:`Config`. Every field can be overridden on the
command line by its dotted path, e.g. ``train.lr=3e-4 model.mlp.hidden=128``; unknown
keys and values of the wrong type are refused with the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import pathlib
import typing

from experiments.architectures import ARCHITECTURES, sections

from ._schema import Config


class ConfigError(ValueError):
    """A config that cannot be used; the message says which key and why."""


# Architecture fields by their short names (``model.hidden``), resolved to the section
# of the config's architecture once every other override is applied.
_SECTIONS = {name: a.section for name, a in ARCHITECTURES.items()}  # architecture -> section
_OWNERS: dict[str, list[str]] = {}  # short name -> the sections that have it
for _section, _cls in sections().items():
    for _f in dataclasses.fields(_cls):
        _OWNERS.setdefault(_f.name, []).append(_section)
_SHORT = set(_OWNERS)


def _fields(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def keys(cls=Config, prefix: str = "") -> list[str]:
    """Every overridable dotted key."""
    out = []
    for name, tp in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            out += keys(tp, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def _parse(key: str, text: str, tp):
    def bad(kind):
        return ConfigError(f"{key} expects {kind}, got {text!r}")

    if tp is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise bad("a boolean (true/false)")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise bad("an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise bad("a number") from None
    if tp is str:
        return text
    if typing.get_origin(tp) is tuple:
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise bad("a comma-separated list of integers, e.g. 32,64") from None
    raise bad(str(tp))


def _set(cfg, path: list[str], value):
    head, *rest = path
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: _set(getattr(cfg, head), rest, value)})


def _type_of(key: str):
    cls = Config
    *parents, last = key.split(".")
    for p in parents:
        cls = _fields(cls)[p]
    return _fields(cls)[last]


def get(cfg: Config, key: str):
    out = cfg
    for part in key.split("."):
        out = getattr(out, part)
    return out


def _unknown(key: str, valid: list[str]) -> ConfigError:
    section, _, name = key.rpartition(".")
    initials = "".join(w[0] for w in name.split("_") if w)  # learning_rate -> lr
    abbreviated = [k for k in valid if k == f"{section}.{initials}" and len(initials) > 1]
    close = (
        abbreviated
        + [
            k
            for k in difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
            if k not in abbreviated
        ][: 3 - len(abbreviated)]
    )
    if not close:  # also try the last component alone: lr -> train.lr
        close = [k for k in valid if k.endswith("." + key.split(".")[-1])]
    hint = f"; closest valid keys: {', '.join(close)}" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _architecture_key(cfg: Config, short: str) -> str:
    """``model.hidden`` -> ``model.mlp.hidden`` for the config's architecture."""
    section = _SECTIONS.get(cfg.model.architecture)
    fields = {f.name for f in dataclasses.fields(getattr(cfg.model, section))} if section else ()
    if short not in fields:
        owners = _OWNERS[short]
        raise ConfigError(
            f"model.{short} is a field of model.architecture in "
            f"{', '.join(a for a, s in _SECTIONS.items() if s in owners)}, not of "
            f"model.architecture={cfg.model.architecture!r}; set model.architecture too or "
            f"use the full key ({', '.join(f'model.{s}.{short}' for s in owners)})"
        )
    return f"model.{section}.{short}"


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings; unknown keys and bad values raise ConfigError.

    Architecture fields may be given by their short name (``model.hidden=128``): they
    go to the section of the architecture the config has once the other overrides are
    applied (``model.mlp.hidden``)."""
    valid, short = keys(), []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = (part.strip() for part in item.split("=", 1))
        if key.startswith("model.") and key[len("model.") :] in _SHORT:
            short.append((key[len("model.") :], text))
            continue
        if key not in valid:
            raise _unknown(key, valid)
        cfg = _set(cfg, key.split("."), _parse(key, text, _type_of(key)))
    for name, text in short:
        key = _architecture_key(cfg, name)
        cfg = _set(cfg, key.split("."), _parse(key, text, _type_of(key)))
    return cfg


CONFIG_DIR = pathlib.Path(__file__).parent.parent / "configs"


def named_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def get_named(name_or_file: str) -> Config:
    """A named config (``checkerboard``) or a Python file's ``get_config()``, unchecked."""
    path = pathlib.Path(name_or_file)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_file}.py"
        if not path.exists():
            close = difflib.get_close_matches(name_or_file, named_configs(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"unknown config {name_or_file!r}{hint}; named configs: "
                f"{', '.join(named_configs())}, or give a path to a .py file"
            )
    elif not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.suffix == ".json":  # a run's config.json: train a copy of that run
        try:
            return from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON ({err}); it is not a config") from None
    spec = importlib.util.spec_from_file_location(f"_scoresde_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {str(path)!r} defines no get_config()")
    return module.get_config()


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def _nest_model(model: dict) -> dict:
    """A ``model`` section written before the per-architecture sections (flat
    ``hidden``, ``channels``, ``nf``, ...) in today's shape; others are unchanged."""
    model = dict(model)
    section = _SECTIONS.get(model.get("architecture", "mlp"))
    for name in sorted(_SHORT & model.keys()):
        value = model.pop(name)
        owners = _OWNERS[name]
        target = section if section in owners else owners[0]
        model.setdefault(target, {})[name] = value
    return model


def from_dict(d: dict) -> Config:
    def build(cls, values, where=""):
        unknown = set(values) - set(_fields(cls))
        if unknown:
            raise _unknown(where + sorted(unknown)[0], keys())
        kwargs = {}
        for name, tp in _fields(cls).items():
            if name not in values:
                continue
            v = values[name]
            if dataclasses.is_dataclass(tp):
                v = build(tp, v, f"{where}{name}.")
            elif typing.get_origin(tp) is tuple:
                v = tuple(v)
            kwargs[name] = v
        return cls(**kwargs)

    if "model" in d:
        d = {**d, "model": _nest_model(d["model"])}
    return build(Config, d)


def save(cfg: Config, path: pathlib.Path) -> None:
    """Write ``path`` whole or not at all (a full disk never leaves a truncated
    config.json, which would make the run unreadable); an I/O error names the path."""
    path = pathlib.Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        partial.replace(path)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from None


def read(path: pathlib.Path) -> Config:
    """The config saved in a work dir's ``config.json`` (checked)."""
    from ._validate import validate

    try:
        values = json.loads(pathlib.Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); it is not a config.json") from None
    return validate(from_dict(values))


def differences(a: Config, b: Config) -> list[str]:
    return [k for k in keys() if get(a, k) != get(b, k)]
