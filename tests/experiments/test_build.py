"""The names-to-objects tables: every lookup refuses an unknown name with the valid
ones; the command line builds the world once and evaluation reads no optimizer state."""

import shutil

import helpers
import pytest

from experiments import build, cli
from experiments import config as config_lib
from experiments import data as data_lib

TINY = helpers.tiny_run(  # a checkerboard run that trains in seconds
    2,
    hidden=8,
    extra={
        "train.warmup_steps": 1,
        "data.n_val": 32,
        "data.n_test": 32,
        "eval.n_samples": 32,
        "eval.n_likelihood": 32,
        "eval.rtol": 1e-2,
        "eval.atol": 1e-2,
    },
)

TABLES = {
    "SDE": (build.SDES, lambda name: build.sde(name)),
    "solver": (build.SOLVERS, build.solver),
    "sampling method": (build.SAMPLERS, build.sampler),
    "architecture": (
        build.ARCHITECTURES,
        lambda name: build.model(config_lib.ModelConfig(architecture=name), (2,), 0),
    ),
    "parametrisation": (
        build.PARAMETRISATIONS,
        lambda name: build.parametrisation(config_lib.ModelConfig(parametrisation=name)),
    ),
    "loss": (
        build.LOSSES,
        lambda name: build.loss(config_lib.Config(train=config_lib.TrainConfig(loss=name))),
    ),
    "optimizer": (
        build.OPTIMIZERS,
        lambda name: build.optimizer(config_lib.TrainConfig(optimizer=name)),
    ),
    "learning-rate schedule": (
        build.SCHEDULES,
        lambda name: build.optimizer(config_lib.TrainConfig(schedule=name)),
    ),
    "data set": (
        data_lib.DATASETS,
        lambda name: data_lib.make_source(config_lib.DataConfig(name=name)),
    ),
}


@pytest.mark.parametrize("what", sorted(TABLES))
def test_every_lookup_refuses_an_unknown_name_and_lists_the_valid_ones(what):
    table, lookup = TABLES[what]
    with pytest.raises(ValueError) as err:
        lookup("no-such-name")
    message = str(err.value)
    assert "no-such-name" in message
    for name in table:
        assert name in message, (what, name)


@pytest.mark.parametrize("key, what", [(k, w) for k, (_, w) in build.NAMES.items()])
def test_every_named_config_key_is_checked_against_its_table(key, what):
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.load("checkerboard", [f"{key}=no-such-name"])
    message = str(err.value)
    assert message.startswith(f"{key}: unknown {what} 'no-such-name'")
    for name in build.NAMES[key][0]:
        assert name in message


def test_eps_range_comes_from_the_sde_end_time():
    """T is asked of the SDE object: 80 for EDM's sigma_max=80, 1 for VP."""
    cfg = config_lib.load("checkerboard_edm", ["eval.sample_eps=79.0"])
    assert build.sde(cfg.sde).T == 80.0
    with pytest.raises(config_lib.ConfigError, match=r"\(0, T\) = \(0, 1\)"):
        config_lib.load("checkerboard", ["eval.sample_eps=1.5"])


def test_every_exported_sde_is_buildable_by_each_of_its_names():
    """The SDE table is the sde package's exports: each concrete process is found under
    every name it declares, built from the config's fields its constructor takes, and a
    config naming it passes the eps check against its own end time."""
    import inspect

    import sde as sde_lib

    exported = [
        cls
        for cls in (getattr(sde_lib, n) for n in sde_lib.__all__)
        if inspect.isclass(cls) and issubclass(cls, sde_lib.AbstractSDE)
    ]
    concrete = [cls for cls in exported if not inspect.isabstract(cls)]
    assert len(concrete) >= 5 and all(cls.names for cls in concrete), concrete
    assert sorted(build.SDES) == sorted(n for cls in concrete for n in cls.names)
    for cls in concrete:
        for name in cls.names:
            built = build.sde(name)
            assert type(built) is cls
            cfg = config_lib.load("checkerboard", [f"sde.name={name}"])
            assert cfg.eval.sample_eps < built.T
    ve = build.sde(config_lib.SDEConfig(name="ve", sigma_min=0.5, sigma_max=7.0))
    assert (ve.sigma_min, ve.sigma_max) == (0.5, 7.0)


def test_every_architecture_section_is_a_config_section_with_short_keys():
    """model.<section> exists for every architecture's section, with its dataclass's
    fields, and a short key (model.<field>) reaches the chosen architecture's section."""
    import dataclasses

    from experiments import architectures

    model = config_lib.ModelConfig()
    for name, arch in build.ARCHITECTURES.items():
        assert isinstance(getattr(model, arch.section), arch.config), name
        field = dataclasses.fields(arch.config)[0]
        cfg = config_lib.load("checkerboard", [f"model.architecture={name}"])
        key = f"model.{arch.section}.{field.name}"
        assert key in config_lib.keys()
        assert config_lib.get(cfg, key) == getattr(arch.config(), field.name)
    assert set(architectures.sections()) == {a.section for a in build.ARCHITECTURES.values()}


@pytest.mark.slow  # 18 s; default run past 12 min
def test_train_builds_once_and_evaluation_reads_no_optimizer_state(tmp_path, monkeypatch):
    counts = dict.fromkeys(("source", "model", "parametrisation", "make_source"), 0)

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    for name in ("source", "model", "parametrisation"):
        monkeypatch.setattr(build, name, counting(name, getattr(build, name)))
    monkeypatch.setattr(
        build.data_lib, "make_source", counting("make_source", build.data_lib.make_source)
    )
    workdir = tmp_path / "run"
    argv = ["train", "--config", "checkerboard", "--workdir", str(workdir), "--quiet", *TINY]
    assert cli.main(argv) == 0
    assert counts == {"source": 1, "model": 1, "parametrisation": 1, "make_source": 1}
    assert (workdir / "samples.npz").exists() and (workdir / "likelihood.json").exists()
    # without the optimizer items, sampling and likelihood still work: they never read them
    for item in (workdir / "checkpoints").glob("*/optimizer"):
        shutil.rmtree(item)
    assert cli.main(["sample", "--workdir", str(workdir), "--n", "8", "--steps", "2"]) == 0
    assert cli.main(["likelihood", "--workdir", str(workdir), "--n", "8"]) == 0
