"""Contract tests parametrised over the registries: every method, model and dataset, plus the registry
and plugin-discovery behaviour they rely on. Fast (CPU, tiny tensors), offline, no Ray."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from torch import nn

import methods as builtin_methods
from harness import plugins
from harness.data import DATASETS, ImageArrays, clear_cache, load_split
from harness.data.sources import DEBIAN_FASHION_MNIST_DIR, DigitsSource
from harness.engine import TrainSettings, train
from harness.errors import DataUnavailableError, HarnessInputError, UnknownNameError
from harness.method import METHODS, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, build_method
from harness.models import MODELS, ModelSpec, build_model
from harness.preconditions import PaperBaseline
from harness.registry import Registry
from harness.search_space import Choice, FloatRange, IntRange
from harness.suite import validate_suite

plugins.discover_methods()
METHOD_NAMES = METHODS.names()
# the shipped catalogue (methods/): test files register probe methods of their own, which declare no claim
CATALOGUE_NAMES = [n for n in METHOD_NAMES if METHODS.get(n).__module__.startswith("methods.")]
MODEL_NAMES = MODELS.names()
DATASET_NAMES = DATASETS.names()

CPU = torch.device("cpu")
NUM_CLASSES = 10
TINY = dict(in_channels=1, num_classes=NUM_CLASSES, image_size=8, mean=(0.5,), std=(0.25,))


def test_registries_hold_the_builtins() -> None:
    assert {"erm", "label_smoothing", "kd", "pgd_at"} <= set(METHOD_NAMES)
    assert {"tiny_cnn", "small_cnn", "wide_cnn", "fast_cnn", "fast_cnn_wide", "resnet20", "resnet18"} <= set(MODEL_NAMES)
    assert {"digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "svhn"} <= set(DATASET_NAMES)


# ---------------------------------------------------------------- methods


def tiny_images(n: int = 64, seed: int = 0) -> ImageArrays:
    """Random uint8 1x8x8 images with balanced labels over 10 classes."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=generator)
    return ImageArrays(images, torch.arange(n, dtype=torch.int64) % NUM_CLASSES)


def tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("fast_cnn", **TINY)


def teacher_for(name: str) -> nn.Module | None:
    if not METHODS.get(name).info.needs_teacher:
        return None
    teacher = tiny_model(seed=123).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def context(teacher: nn.Module | None) -> TrainContext:
    """What the jobs give `prepare_model` and the engine gives every hook (see `harness.jobs._train_method`)."""
    return TrainContext(step=0, total_steps=2, epoch=0, num_classes=NUM_CLASSES, device=CPU, teacher=teacher,
                        generator=torch.Generator().manual_seed(0), num_samples=64, input_shape=(1, 8, 8),
                        teacher_model="fast_cnn", build_model=lambda name=None: build_model(name or "fast_cnn", **TINY))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_declares_itself(name: str) -> None:
    cls = METHODS.get(name)
    assert issubclass(cls, Method)
    assert isinstance(cls.info, MethodInfo)
    assert cls.info.name == name
    assert cls.info.summary.strip()
    assert cls.info.cost_factor > 0
    assert issubclass(cls.Config, MethodConfig)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_builds_from_config_defaults(name: str) -> None:
    cls = METHODS.get(name)
    method = build_method(name)
    assert type(method) is cls
    assert method.config == cls.Config()
    assert cls().config == cls.Config()


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_config_round_trips_and_is_strict(name: str) -> None:
    config_cls = METHODS.get(name).Config
    config = config_cls()
    assert config_cls(**config.model_dump()) == config
    assert config_cls.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValidationError, match="extra"):
        config_cls(not_a_hyper_parameter_of_any_method=1)
    for field in config_cls.model_fields:
        with pytest.raises(ValidationError, match="frozen"):
            setattr(config, field, getattr(config, field))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_search_space_names_config_fields(name: str) -> None:
    cls = METHODS.get(name)
    assert set(cls.search_space) <= set(cls.Config.model_fields)
    for dimension in cls.search_space.values():
        assert isinstance(dimension, FloatRange | IntRange | Choice)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_training_loss_is_a_finite_scalar_with_grad(name: str) -> None:
    method = build_method(name)
    ctx = context(teacher_for(name))
    model = method.prepare_model(tiny_model(seed=0), ctx).train()  # as the engine does
    data = tiny_images(8)
    images, labels = data.images.float() / 255.0, data.labels

    out = method.training_loss(model, images, labels, ctx)

    assert isinstance(out, LossOutput)
    assert out.loss.ndim == 0
    assert out.loss.requires_grad
    assert math.isfinite(float(out.loss.detach()))
    for part, value in out.parts.items():
        assert isinstance(part, str)
        assert math.isfinite(float(value))
    if out.logits is not None:  # K class logits, plus one abstain logit for methods that add it
        assert tuple(out.logits.shape) in ((8, NUM_CLASSES), (8, NUM_CLASSES + 1))
    out.loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if METHODS.get(n).info.needs_teacher])
def test_method_that_needs_a_teacher_refuses_to_run_without_one(name: str) -> None:
    data = tiny_images(8)
    with pytest.raises(RuntimeError, match="teacher"):
        build_method(name).training_loss(tiny_model(0), data.images.float() / 255.0, data.labels, context(None))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_trains_two_steps_through_the_engine(name: str) -> None:
    method = build_method(name)
    teacher = teacher_for(name)
    model = method.prepare_model(tiny_model(seed=0), context(teacher))
    assert isinstance(model, nn.Module)
    before = {key: value.detach().clone() for key, value in model.named_parameters()}
    teacher_before = [p.clone() for p in teacher.parameters()] if teacher is not None else []

    ctx = context(teacher)
    settings = method.adjust_settings(TrainSettings(steps=2, batch_size=16), ctx)
    stats = train(model, method, tiny_images(), settings, num_classes=NUM_CLASSES, device=CPU, context=ctx)

    assert stats.steps == settings.steps
    assert stats.samples_seen == settings.steps * settings.batch_size
    assert math.isfinite(stats.last_loss)
    assert stats.last_loss > 0
    changed = [key for key, value in model.named_parameters() if not torch.equal(value.detach(), before[key])]
    assert changed, "no parameter moved in two optimiser steps"
    head_weight = [key for key in before if key.endswith("head.1.weight")]
    assert head_weight and head_weight[0] in changed
    assert not model.training  # the engine hands the model back in eval mode
    if teacher is not None:
        assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters(), strict=True))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_finalize_returns_a_model_giving_class_logits(name: str) -> None:
    """After two steps, `finalize` (a post-training stage, or nothing) returns what gets evaluated."""
    method = build_method(name)
    teacher = teacher_for(name)
    ctx = context(teacher)
    model = method.prepare_model(tiny_model(seed=0), ctx)
    data = tiny_images()
    train(model, method, data, TrainSettings(steps=2, batch_size=16), num_classes=NUM_CLASSES, device=CPU,
          context=ctx)
    final = method.finalize(model, data, TrainContext(**{**ctx.__dict__, "step": 2}))
    assert isinstance(final, nn.Module)
    with torch.no_grad():
        logits = final.eval()(data.images[:4].float() / 255.0)
    assert tuple(logits.shape) in ((4, NUM_CLASSES), (4, NUM_CLASSES + 1))
    assert bool(torch.isfinite(logits).all())
    state = method.state_dict()  # checkpointable: torch.save round-trips it and load_state_dict accepts it
    buffer = __import__("io").BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    method.load_state_dict(torch.load(buffer, weights_only=False))


def test_engine_training_is_deterministic_for_a_seed() -> None:
    def run() -> dict[str, torch.Tensor]:
        model = tiny_model(seed=0)
        train(model, build_method("erm"), tiny_images(), TrainSettings(steps=2, batch_size=16, seed=7),
              num_classes=NUM_CLASSES, device=CPU)
        return model.state_dict()

    first, second = run(), run()
    assert all(torch.equal(first[key], second[key]) for key in first)


# ---------------------------------------------------------------- models

MODEL_SHAPES = [(1, 8), (1, 28), (3, 32)]
MODEL_CASES = [
    pytest.param(name, channels, size, id=f"{name}-{channels}x{size}x{size}")
    for name in MODEL_NAMES
    for channels, size in MODEL_SHAPES
    if name != "resnet18" or (channels, size) == (3, 32)  # resnet18 is slow at every size; one is enough
]


@pytest.mark.parametrize(("name", "channels", "size"), MODEL_CASES)
def test_model_builds_returns_logits_and_backpropagates(name: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    classes = 7
    model = build_model(name, in_channels=channels, num_classes=classes, image_size=size,
                        mean=(0.5,) * channels, std=(0.25,) * channels).train()
    images = torch.rand(2, channels, size, size)

    logits = model(images)

    assert tuple(logits.shape) == (2, classes)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 6])).backward()
    parameters = [p for p in model.parameters() if p.requires_grad]
    assert parameters
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in parameters)
    model.eval()
    with torch.no_grad():
        assert tuple(model(images[:1]).shape) == (1, classes)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_spec_is_consistent(name: str) -> None:
    spec = MODELS.get(name)
    assert isinstance(spec, ModelSpec)
    assert spec.name == name
    assert spec.summary.strip()


def test_model_normalises_its_input() -> None:
    model = build_model("tiny_cnn", in_channels=1, num_classes=3, image_size=8, mean=(0.25,), std=(0.5,))
    normalise = model[0]
    assert torch.allclose(normalise(torch.full((1, 1, 2, 2), 0.75)), torch.ones(1, 1, 2, 2))


# ---------------------------------------------------------------- datasets


def debian_fashion_mnist_present() -> bool:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return all(any((DEBIAN_FASHION_MNIST_DIR / (stem + ext)).is_file() for ext in ("", ".gz")) for stem in stems)


ALWAYS_AVAILABLE = {"digits", "digits28"} | ({"fashion_mnist"} if debian_fashion_mnist_present() else set())
EXPECTED_SIZES = {"digits": (1438, 359), "fashion_mnist": (60_000, 10_000)}


@pytest.fixture
def offline_empty_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline, with HARNESS_DATA_DIR pointing at an empty directory; no cached split leaks in or out."""
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(empty))
    clear_cache()
    yield empty
    clear_cache()


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_dataset_info_is_consistent(name: str) -> None:
    info = DATASETS.get(name).info
    assert info.name == name
    assert info.channels in (1, 3)
    assert len(info.mean) == len(info.std) == info.channels
    assert info.num_classes > 1
    assert info.image_size >= 8
    assert all(0.0 < m < 1.0 for m in info.mean)
    assert all(0.0 < s < 1.0 for s in info.std)
    assert info.crop_padding >= 0


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_dataset_loads_when_available_and_explains_when_not(name: str, offline_empty_data_dir: Path) -> None:
    source = DATASETS.get(name)
    info = source.info
    if name not in ALWAYS_AVAILABLE:
        with pytest.raises(DataUnavailableError) as raised:
            source.check_available()
        assert isinstance(raised.value, HarnessInputError)
        assert "HARNESS_DATA_DIR" in str(raised.value)
        assert name in str(raised.value)
        return
    source.check_available()
    sizes = []
    for split in ("train", "test"):
        arrays = load_split(name, split)
        assert arrays.images.dtype == torch.uint8
        assert arrays.labels.dtype == torch.int64
        assert tuple(arrays.images.shape[1:]) == (info.channels, info.image_size, info.image_size)
        assert len(arrays.images) == len(arrays.labels) > 0
        assert int(arrays.labels.min()) >= 0 and int(arrays.labels.max()) < info.num_classes
        assert set(arrays.labels.unique().tolist()) == set(range(info.num_classes))
        sizes.append(len(arrays))
    if name in EXPECTED_SIZES:
        assert tuple(sizes) == EXPECTED_SIZES[name]


# ---------------------------------------------------------------- registry


class Widget:
    def __init__(self, name: str) -> None:
        self.name = name


def test_registry_rejects_a_second_object_under_the_same_name() -> None:
    registry: Registry[Widget] = Registry("widget")
    first = Widget("alpha")
    registry.add("alpha", first)
    registry.add("alpha", first)  # the same object again (a re-imported module) is harmless
    with pytest.raises(ValueError, match="widget 'alpha' is registered twice"):
        registry.add("alpha", Widget("alpha"))
    assert registry.get("alpha") is first
    assert len(registry) == 1


def test_registry_decorator_names_entries() -> None:
    registry: Registry[object] = Registry("thing")

    @registry.register()
    def builder() -> None: ...

    @registry.register("explicit")
    def other() -> None: ...

    registry.register()(Widget("by_attribute"))
    assert registry.names() == ["builder", "by_attribute", "explicit"]
    assert list(registry) == registry.names()
    assert "builder" in registry and "missing" not in registry


def test_registry_unknown_name_lists_known_names_and_suggests() -> None:
    registry: Registry[Widget] = Registry("widget")
    for name in ("beta", "alpha"):
        registry.add(name, Widget(name))
    with pytest.raises(UnknownNameError) as raised:
        registry.get("alpah")
    error = raised.value
    assert isinstance(error, KeyError) and isinstance(error, HarnessInputError)
    assert str(error) == "unknown widget 'alpah'; did you mean 'alpha'? known: alpha, beta"
    assert (error.kind, error.name, error.known) == ("widget", "alpah", ["alpha", "beta"])
    with pytest.raises(UnknownNameError) as far:
        registry.get("zzzzzz")
    assert str(far.value) == "unknown widget 'zzzzzz'; known: alpha, beta"


@pytest.mark.parametrize(("registry", "typo", "expected"), [
    (METHODS, "label_smothing", "label_smoothing"),
    (MODELS, "resnet_20", "resnet20"),
    (DATASETS, "fashion_mnst", "fashion_mnist"),
], ids=["methods", "models", "datasets"])
def test_real_registries_suggest_the_nearest_name(registry: Registry, typo: str, expected: str) -> None:
    with pytest.raises(UnknownNameError) as raised:
        registry.get(typo)
    assert f"did you mean '{expected}'?" in str(raised.value)
    assert str(raised.value).endswith("known: " + ", ".join(registry.names()))


def test_real_registries_reject_duplicates() -> None:
    erm = METHODS.get("erm")

    class Impostor(Method):
        info = MethodInfo(name="erm", summary="not the real erm")

    with pytest.raises(ValueError, match="registered twice"):
        METHODS.add("erm", Impostor)
    with pytest.raises(ValueError, match="registered twice"):
        MODELS.add("tiny_cnn", ModelSpec("tiny_cnn", "impostor", lambda c, k, s: nn.Linear(1, 1)))
    with pytest.raises(ValueError, match="registered twice"):
        DATASETS.add("digits", DigitsSource())
    assert METHODS.get("erm") is erm
    assert MODELS.get("tiny_cnn").summary != "impostor"


# ---------------------------------------------------------------- plugin discovery

BROKEN_PLUGIN = """
raise RuntimeError("this plugin is broken on purpose")
"""
GOOD_PLUGIN = """
from harness.method import Method, MethodInfo, register_method


@register_method
class ContractProbeGood(Method):
    info = MethodInfo(name="{name}", summary="A plugin discovered after a broken one.")
"""


@pytest.fixture
def fresh_discovery(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Discovery forgets its cache for the test; modules and methods the test adds are removed after it."""
    monkeypatch.setattr(plugins, "_failures", None)
    monkeypatch.delenv(getattr(plugins, "PLUGINS_ENV", "HARNESS_PLUGINS"), raising=False)
    added_modules: list[str] = []
    yield added_modules
    for module in added_modules:
        sys.modules.pop(module, None)
        parent, _, child = module.rpartition(".")
        if parent in sys.modules and hasattr(sys.modules[parent], child):
            delattr(sys.modules[parent], child)
    for name in ("contract_probe_good", "contract_probe_env"):
        METHODS._entries.pop(name, None)


def test_broken_builtin_plugin_is_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_discovery: list[str]
) -> None:
    (tmp_path / "a_broken_plugin.py").write_text(BROKEN_PLUGIN)
    (tmp_path / "zz_good_plugin.py").write_text(textwrap.dedent(GOOD_PLUGIN.format(name="contract_probe_good")))
    monkeypatch.setattr(builtin_methods, "__path__", [*builtin_methods.__path__, str(tmp_path)])
    fresh_discovery += ["methods.a_broken_plugin", "methods.zz_good_plugin"]

    failures = plugins.discover_methods()

    assert [f.module for f in failures] == ["methods.a_broken_plugin"]
    assert failures[0].error == "RuntimeError: this plugin is broken on purpose"
    assert "contract_probe_good" in METHODS  # modules after the broken one were still imported
    assert {"erm", "kd", "label_smoothing", "pgd_at"} <= set(METHODS.names())
    # cached: a second call re-imports nothing and returns an equal, independent list
    again = plugins.discover_methods()
    assert again == failures
    again.clear()
    assert plugins.discover_methods() == failures
    # and a suite still validates with the broken plugin around
    smoke = yaml.safe_load((Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml").read_text())
    assert validate_suite(smoke).name == "smoke"


@pytest.mark.skipif(not hasattr(plugins, "PLUGINS_ENV"), reason="discovery has no environment-variable plugins")
def test_environment_plugins_are_imported_and_failures_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_discovery: list[str]
) -> None:
    (tmp_path / "contract_env_plugin.py").write_text(textwrap.dedent(GOOD_PLUGIN.format(name="contract_probe_env")))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.PLUGINS_ENV, " no_such_harness_plugin_module , contract_env_plugin,")
    fresh_discovery.append("contract_env_plugin")

    failures = plugins.discover_methods()

    assert [f.module for f in failures] == ["no_such_harness_plugin_module"]
    assert failures[0].error.startswith("ModuleNotFoundError:")
    assert "contract_probe_env" in METHODS


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if METHODS.get(n).info.claim is not None])
def test_method_claim_names_a_column_the_harness_measures(name: str) -> None:
    """docs/claims.md judges each claim on one result column: it must be one a metric (or a scenario) writes."""
    from harness.evaluation import METRICS

    claim = METHODS.get(name).info.claim
    assert claim is not None and claim.text.strip()
    columns = {column.replace("{split}", "test") for metric in METRICS.names() for column in METRICS.get(metric).columns}
    continual = {"continual/avg_accuracy", "continual/avg_incremental_accuracy", "continual/forgetting"}
    assert claim.metric in columns | continual, f"{name}: no metric writes {claim.metric!r}"
    assert claim.margin >= 0 and (claim.kind == "no_worse" or claim.margin == 0)
    # the baseline is another registered method, or a labelled variant of one that a PaperBaseline precondition
    # describes (er's er_plain: er with every trick off), which a suite runs under that label
    described = {pre.label for pre in claim.preconditions if isinstance(pre, PaperBaseline)}
    assert (claim.baseline in METHODS or claim.baseline in described) and claim.baseline != name, \
        f"{name}: baseline {claim.baseline!r} is no other method, nor a paper baseline its claim describes"


def test_every_shipped_suite_with_a_method_runs_its_claims_baseline() -> None:
    """A claim is judged against its baseline in the same run: a suite without it could never judge it."""
    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "suites").glob("*.yaml")):
        entries = yaml.safe_load(path.read_text())["methods"]
        names = {entry["name"] for entry in entries}
        labels = {entry.get("label") or entry["name"] for entry in entries}
        for name in names & set(METHOD_NAMES):
            claim = METHODS.get(name).info.claim
            if claim is not None:
                assert claim.baseline in labels, f"{path.name} runs {name} but not its claim's baseline {claim.baseline}"


def test_every_catalogue_method_but_the_baseline_declares_its_claim() -> None:
    missing = [n for n in CATALOGUE_NAMES if n != "erm" and METHODS.get(n).info.claim is None]
    assert not missing, f"methods without a Claim in their MethodInfo: {missing}"


def test_readme_and_a_shipped_suite_name_every_registered_method() -> None:
    """Issue 6's 'done': every method is documented in the README and runs in at least one shipped suite."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    suites = {path.stem: yaml.safe_load(path.read_text()) for path in (root / "suites").glob("*.yaml")}
    in_suites = {entry["name"] for suite in suites.values() for entry in suite["methods"]}
    for name in CATALOGUE_NAMES:
        assert f"`{name}`" in readme, f"README.md does not list method {name}"
        assert name in in_suites, f"no suite in suites/ runs method {name}"


def test_every_column_a_metric_or_a_continual_run_writes_is_declared() -> None:
    """The leaderboard and dashboards read direction and summary/detail from declarations, never names."""
    from harness.columns import column_info
    from harness.evaluation import METRICS, EvaluationSettings
    from harness.evaluation.continual import continual_scores

    columns = [c for name in METRICS.names() for c in METRICS.get(name).column_names("test", EvaluationSettings())]
    columns += list(continual_scores([[0.9], [0.5, 0.8]]))
    undeclared = [c for c in columns if not column_info(c).declared]
    assert not undeclared, f"columns without a harness.columns.Column declaration: {undeclared}"
