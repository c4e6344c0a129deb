"""Experiment configs: every named config loads, ``key=value`` overrides parse by field
type, bad keys and values are refused with the fix in the message, JSON round trip, and
the CLI refuses a bad config before it writes anything."""

import dataclasses
import json

import pytest

from experiments import cli
from experiments import config as config_lib


@pytest.mark.parametrize("name", config_lib.named_configs())
def test_named_config_loads_validates_and_round_trips(name, tmp_path):
    cfg = config_lib.load(name)
    assert isinstance(cfg, config_lib.Config)
    assert config_lib.validate(cfg) is cfg
    path = tmp_path / "config.json"
    config_lib.save(cfg, path)
    saved = json.loads(path.read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(cfg)}
    assert saved["train"]["lr"] == cfg.train.lr
    assert saved["model"]["unet"]["channels"] == list(cfg.model.unet.channels)
    assert config_lib.read(path) == cfg


def test_named_configs_lists_the_config_files():
    names = config_lib.named_configs()
    assert {"checkerboard", "8gaussians"} <= set(names)
    assert not any(n.startswith("_") for n in names)


def test_overrides_parse_by_field_type(tmp_path):
    cfg = config_lib.load(
        "checkerboard",
        [
            "train.steps=123",  # int
            "train.lr=3e-4",  # float
            "sde.beta_max=40",  # float given as an integer
            "sde.name=ve",  # str with choices
            "eval.solver=dopri5",  # free str
            "model.unet.channels=16,32",  # tuple of ints
            " model.hidden = 64 ",  # whitespace; the short key of the mlp's field
        ],
    )
    assert cfg.train.steps == 123 and type(cfg.train.steps) is int
    assert cfg.train.lr == 3e-4 and type(cfg.train.lr) is float
    assert cfg.sde.beta_max == 40.0 and type(cfg.sde.beta_max) is float
    assert cfg.sde.name == "ve" and cfg.eval.solver == "dopri5"
    assert cfg.model.unet.channels == (16, 32)
    assert cfg.model.mlp.hidden == 64
    # untouched fields keep the named config's values
    default = config_lib.load("checkerboard")
    assert cfg.train.batch_size == default.train.batch_size
    assert cfg.data == default.data
    # the resolved config round-trips through JSON, tuples included
    config_lib.save(cfg, tmp_path / "c.json")
    back = config_lib.read(tmp_path / "c.json")
    assert back == cfg and back.model.unet.channels == (16, 32)
    assert config_lib.differences(default, cfg) == [
        "model.mlp.hidden",
        "model.unet.channels",
        "sde.name",
        "sde.beta_max",
        "train.steps",
        "train.lr",
        "eval.solver",
    ]


@pytest.mark.parametrize("text", ["16,32", "(16, 32)", "[16,32]", "16, 32,"])
def test_tuple_override_spellings(text):
    cfg = config_lib.load("checkerboard", [f"model.unet.channels={text}"])
    assert cfg.model.unet.channels == (16, 32)


def test_later_override_wins_and_order_does_not_matter_for_validation():
    cfg = config_lib.load("checkerboard", ["train.lr=1e-2", "train.lr=2e-3"])
    assert cfg.train.lr == 2e-3
    # importance sampling needs likelihood weighting; validated after all overrides
    for overrides in (
        ["train.t_sampling=importance", "train.weighting=likelihood"],
        ["train.weighting=likelihood", "train.t_sampling=importance"],
    ):
        cfg = config_lib.load("checkerboard", overrides)
        assert (cfg.train.t_sampling, cfg.train.weighting) == ("importance", "likelihood")


def test_bool_values_parse():
    def flip(text):
        return config_lib.apply_overrides(
            config_lib.Config(), [f"data.random_flip={text}"]
        ).data.random_flip

    for text in ("true", "True", "1", "yes"):
        assert flip(text) is True
    for text in ("false", "FALSE", "0", "no"):
        assert flip(text) is False
    with pytest.raises(config_lib.ConfigError, match="data.random_flip expects a boolean.*'maybe'"):
        flip("maybe")


def test_every_key_is_overridable():
    keys = config_lib.keys()
    assert len(keys) == len(set(keys))
    assert {"train.lr", "model.unet.channels", "eval.rtol", "data.name", "sde.beta_max"} <= set(
        keys
    )
    for key in keys:  # a key given its own current value parses back to that value
        value = config_lib.get(config_lib.Config(), key)
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        cfg = config_lib.apply_overrides(config_lib.Config(), [f"{key}={text}"])
        assert config_lib.get(cfg, key) == value, key


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lrr=1e-3", "train.lr"),
        ("lr=1e-3", "train.lr"),
        ("modle.mlp.hidden=3", "model.mlp.hidden"),
    ],
)
def test_unknown_key_lists_closest_valid_keys(override, expected):
    key = override.split("=")[0]
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.load("checkerboard", [override])
    message = str(err.value)
    assert f"unknown config key {key!r}" in message
    assert "closest valid keys" in message and expected in message


def test_section_name_alone_is_not_a_key():
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'train'"):
        config_lib.load("checkerboard", ["train=3"])


def test_override_without_equals_sign():
    with pytest.raises(config_lib.ConfigError, match="'train.lr' is not of the form key=value"):
        config_lib.load("checkerboard", ["train.lr"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.steps=abc", "train.steps expects an integer, got 'abc'"),
        ("train.steps=1.5", "train.steps expects an integer, got '1.5'"),
        ("train.lr=fast", "train.lr expects a number, got 'fast'"),
        (
            "model.unet.channels=16,x",
            "model.unet.channels expects a comma-separated list of integers",
        ),
    ],
)
def test_wrong_type_names_key_and_expected_type(override, expected):
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.load("checkerboard", [override])
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["sde.name=foo"], "sde.name: unknown SDE 'foo'; choose one of "),
        (["model.architecture=cnn"], "unknown architecture 'cnn'; choose one of "),
        (
            ["eval.method=euler"],
            "unknown sampling method 'euler'; choose one of consistency, edm, meanflow, ode, pc",
        ),
        (["train.lr=0"], "train.lr must be > 0, got 0.0"),
        (["train.steps=-5"], "train.steps must be > 0, got -5"),
        (["train.batch_size=0"], "train.batch_size must be > 0"),
        (["train.ema_decay=1"], "train.ema_decay must lie in [0, 1)"),
        (["model.dropout=-0.1"], "model.dropout must lie in [0, 1)"),
        (["train.eps=0"], "train.eps must lie in (0, T) = (0, 1)"),
        (["eval.likelihood_eps=1.5"], "eval.likelihood_eps must lie in (0, T) = (0, 1)"),
        (["train.t_sampling=importance"], "importance needs train.weighting=likelihood"),
        (["train.t_sampling=beta"], "unknown time sampling 'beta'; choose one of "),
        (["train.t_sampling=logit_normal", "train.logit_std=0"], "train.logit_std must be"),
        (["train.t_sampling=logit_normal", "train.logit_mean=nan"], "train.logit_mean must"),
        (["train.t_sampling=lognormal", "train.p_std=-1"], "train.p_std must be finite"),
        (["train.weighting=l2"], "unknown DSM weighting 'l2'"),
        (["train.lr=inf"], "train.lr must be a finite number, got inf"),
        (["sde.sigma_max=inf"], "sde.sigma_max must be a finite number"),
        (["train.p_mean=nan"], "train.p_mean must be a finite number"),
    ],
)
def test_invalid_values_are_refused(overrides, expected):
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.load("checkerboard", overrides)
    assert expected in str(err.value)


def test_time_sampling_config_builds_the_log_snr_density():
    """SD3's logit(t) ~ N(m, s^2) is lambda ~ N(-m, s^2); EDM's ln sigma ~ N(P_mean,
    P_std^2) is lambda ~ N(-P_mean, P_std^2); the loss is built with that density."""
    import sde
    from experiments import build

    cfg = config_lib.load("checkerboard", ["train.t_sampling=logit_normal", "train.logit_mean=0.5"])
    density = build.time_sampling(cfg.train)
    assert isinstance(density, sde.NormalLogSNR)
    assert (density.mean, density.std) == (-0.5, 1.0)
    cfg = config_lib.load("checkerboard", ["train.t_sampling=lognormal", "train.p_std=0.8"])
    density = build.time_sampling(cfg.train)
    assert (density.mean, density.std) == (1.2, 0.8)
    assert isinstance(build.time_sampling(config_lib.load("checkerboard").train), sde.UniformTime)


def test_unknown_config_name_lists_named_configs():
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.load("checkerbord")
    message = str(err.value)
    assert "did you mean checkerboard" in message
    for name in config_lib.named_configs():
        assert name in message


def test_config_file_by_path(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "from experiments.config import Config, TrainConfig\n"
        "def get_config():\n    return Config(train=TrainConfig(steps=7))\n"
    )
    cfg = config_lib.load(str(path), ["train.lr=5e-4"])
    assert cfg.train.steps == 7 and cfg.train.lr == 5e-4
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        config_lib.load(str(tmp_path / "missing.py"))
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(config_lib.ConfigError, match="defines no get_config"):
        config_lib.load(str(tmp_path / "empty.py"))
    (tmp_path / "bad.py").write_text(
        "from experiments.config import Config, TrainConfig\n"
        "def get_config():\n    return Config(train=TrainConfig(lr=-1.0))\n"
    )
    with pytest.raises(config_lib.ConfigError, match="train.lr must be > 0"):
        config_lib.load(str(tmp_path / "bad.py"))


def test_read_refuses_an_invalid_saved_config(tmp_path):
    d = config_lib.to_dict(config_lib.load("checkerboard"))
    d["sde"]["name"] = "vq"
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(config_lib.ConfigError, match="sde.name"):
        config_lib.read(tmp_path / "config.json")


# Values that would otherwise fail late: after the whole training run (eval.solver) or
# as a traceback instead of a ConfigError (data.name).
def test_unknown_eval_solver_is_refused_at_load():
    with pytest.raises(config_lib.ConfigError, match="eval.solver"):
        config_lib.load("checkerboard", ["eval.solver=tsit55"])


def test_unknown_data_set_is_refused_at_load():
    with pytest.raises(config_lib.ConfigError, match="data.name"):
        config_lib.load("checkerboard", ["data.name=checkerbored"])


# ---- the CLI refuses before writing anything ------------------------------------------


def test_cli_unknown_key_exits_2_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["train", "--config", "checkerboard", "--workdir", str(workdir), "train.lrr=1"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "unknown config key 'train.lrr'" in captured.err
    assert "train.lr" in captured.err
    assert captured.out == ""
    assert not workdir.exists()


def test_cli_wrong_type_exits_2_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["train", "--config", "checkerboard", "--workdir", str(workdir), "train.steps=1.5"]
    assert cli.main(argv) == 2
    assert "train.steps expects an integer, got '1.5'" in capsys.readouterr().err
    assert not workdir.exists()


def test_cli_unknown_config_name_lists_named_configs(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cli.main(["train", "--config", "nosuchconfig", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'nosuchconfig'" in err
    for name in config_lib.named_configs():
        assert name in err
    assert not workdir.exists()


def test_cli_unknown_command_and_help(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for command in ("train", "sample", "likelihood"):
        assert command in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["likelihood", "--n", "-5"], "argument --n: must be an integer >= 1, got -5"),
        (["likelihood", "--n", "0"], "argument --n: must be an integer >= 1, got 0"),
        (["likelihood", "--rtol", "0"], "argument --rtol: must be a finite number > 0, got 0"),
        (["likelihood", "--method", "elbo", "--n-t", "1"], "--n-t: must be an integer >= 2"),
        (["sample", "--n", "0"], "argument --n: must be an integer >= 1, got 0"),
        (["sample", "--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["sample", "--guidance", "nan"], "argument --guidance: must be a finite number"),
        (["inpaint", "--fills", "0"], "argument --fills: must be an integer >= 1"),
    ],
)
def test_cli_numbers_are_range_checked_before_any_work(argv, needle, tmp_path, capsys):
    """A number out of range is a one-line usage error (exit 2), never reinterpreted
    (``--n 0`` used to mean all points, ``--rtol 0`` the default)."""
    assert cli.main([*argv, "--workdir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_train_dry_run_builds_checks_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["train", "--config", "checkerboard", "--workdir", str(workdir), "--dry-run"]
    assert cli.main([*argv, "model.hidden=32"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["model"]["mlp"]["hidden"] == 32
    assert "parameters" in err and "nothing was written" in err
    assert not workdir.exists()
