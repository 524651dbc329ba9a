"""qwenvl/compat.py: one test per version adaptation. CI runs them in both environments (the lock, and the low
end of pyproject.toml's range pinned in .ci/low-env.txt), so each adaptation is checked where it differs."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
import torch
import transformers

from qwenvl import compat

REPO = Path(__file__).resolve().parents[1]
PINS = REPO / ".ci" / "low-env.txt"


def _checkpointing_in_a_training_step(tiny_dir, demo_converted, tmp_path, registry_at, extra):
    """One SFT step through the recipe, with the guide's flag; what the model says at the first step: the
    model's flag, and every decoder layer's own ``gradient_checkpointing`` attribute."""
    from qwenvl.train.arguments import parse_arguments
    from qwenvl.train.recipe import SFTRecipe

    registry_at(demo_converted)
    argv = [
        "--model_name_or_path",
        str(tiny_dir),
        "--dataset_use",
        "flare_retino",
        "--output_dir",
        str(tmp_path),
    ]
    argv += ["--max_steps", "1", "--per_device_train_batch_size", "1", "--save_strategy", "no"]
    argv += ["--report_to", "none", "--dataloader_num_workers", "0", "--min_pixels", "1024"]
    argv += ["--max_pixels", "16384", *extra]
    recipe = SFTRecipe(parse_arguments(argv))
    recipe.setup()
    seen = {}

    class Look(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            layers = inner.model.language_model.layers
            seen["model"] = compat.is_checkpointing(model)
            seen["layers"] = {bool(getattr(layer, "gradient_checkpointing", False)) for layer in layers}

    recipe.trainer.add_callback(Look())
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated name read on the way (5.2x warns)
        recipe.trainer.train()
    return seen


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("flag", ["True", "False"])
def test_the_guides_checkpointing_flag_reaches_the_models_layers(
    tiny_dir, demo_converted, tmp_path, registry_at, flag, lora
):
    """``--gradient_checkpointing True`` checkpoints every decoder layer on either transformers (5.17 reads the
    old field, 5.2x the new one), for a full finetune and for LoRA (PEFT's wrapper in between); False none."""
    extra = ["--gradient_checkpointing", flag] + (["--lora_enable", "True", "--lora_r", "4"] if lora else [])
    seen = _checkpointing_in_a_training_step(tiny_dir, demo_converted, tmp_path, registry_at, extra)
    on = flag == "True"
    assert seen == {"model": on, "layers": {on}}


def test_hand_on_checkpointing_moves_the_flag_only_where_the_new_field_exists():
    @dataclasses.dataclass
    class Old:  # transformers 5.17's TrainingArguments
        gradient_checkpointing: bool | None = None
        gradient_checkpointing_kwargs: dict | None = None

    @dataclasses.dataclass
    class New(Old):  # 5.2x's: both names
        activation_checkpointing: bool | None = None
        activation_checkpointing_kwargs: dict | None = None

    old = Old(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
    compat.hand_on_checkpointing(old)
    assert (old.gradient_checkpointing, old.gradient_checkpointing_kwargs) == (True, {"use_reentrant": False})
    assert not hasattr(old, "activation_checkpointing")
    new = New(gradient_checkpointing=True)
    compat.hand_on_checkpointing(new)
    assert (new.gradient_checkpointing, new.activation_checkpointing) == (None, True)
    given = New(gradient_checkpointing=False, activation_checkpointing=True)  # the new name wins
    compat.hand_on_checkpointing(given)
    assert (given.gradient_checkpointing, given.activation_checkpointing) == (False, True)
    # and the installed TrainingArguments is one of the two shapes
    names = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    assert "gradient_checkpointing" in names


def test_is_checkpointing_reads_the_model_without_a_warning(tiny_dir):
    from qwenvl.model import load_model

    model = load_model(tiny_dir, dtype="float32")
    prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"  # 5.2x / 5.17
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert compat.is_checkpointing(model) is False
        getattr(model, f"{prefix}_checkpointing_enable")()
        assert compat.is_checkpointing(model) is True
        getattr(model, f"{prefix}_checkpointing_disable")()
        assert compat.is_checkpointing(model) is False


def test_lora_wrapping_prints_no_checkpointing_warning(tiny_dir):
    from qwenvl.model import load_model
    from qwenvl.train.lora import LoraSettings, apply_lora

    model = load_model(tiny_dir, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        wrapped = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    assert compat.is_checkpointing(wrapped) is False
    with warnings.catch_warnings(record=True) as caught:  # the silencing is scoped: outside it, warnings pass
        warnings.simplefilter("always")
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning, stacklevel=1)
    assert len(caught) == 1


def test_a_grpo_step_reads_no_deprecated_checkpointing_flag_and_keeps_checkpointing_on(
    tiny_dir, demo_converted, tmp_path, registry_at
):
    """TRL's rollout step reads ``model.is_gradient_checkpointing`` twice (to switch checkpointing off for the
    generation and the no-grad forward, and back on), a FutureWarning on transformers 5.2x: none reaches the
    console, and checkpointing is on again after the step."""
    pytest.importorskip("trl")
    from qwenvl.train.grpo import GRPORecipe
    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    registry_at(demo_converted)
    opts = {
        "model_name_or_path": str(tiny_dir),
        "dataset_use": "flare_retino",
        "output_dir": str(tmp_path / "grpo"),
        "max_steps": "1",
        "per_device_train_batch_size": "2",
        "num_generations": "2",
        "max_completion_length": "3",
        "save_strategy": "no",
        "report_to": "none",
        "bf16": "False",
        "gradient_checkpointing": "True",
        "dataloader_num_workers": "0",
        "min_pixels": "1024",
        "max_pixels": "8192",
    }
    recipe = GRPORecipe(parse_grpo_arguments([x for k, v in opts.items() for x in (f"--{k}", v)]))
    recipe.setup()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recipe.trainer.train()
    assert [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)] == []
    assert recipe.trainer.state.global_step == 1
    assert compat.is_checkpointing(recipe.trainer.model) is True


def test_pixel_limits_round_trip_on_the_installed_processor_and_on_plain_attributes(tiny_dir):
    from qwenvl.model import load_processor

    image_processor = load_processor(tiny_dir).image_processor
    compat.set_image_pixel_limits(image_processor, 1024, 16384)
    assert compat.image_pixel_limits(image_processor) == (1024, 16384)
    assert image_processor.size["shortest_edge"] == 1024 and image_processor.size["longest_edge"] == 16384

    class Attributes:  # a processor that keeps min_pixels / max_pixels of its own besides size
        size = None
        min_pixels, max_pixels = 3136, 50176

    plain = Attributes()
    assert compat.image_pixel_limits(plain) == (3136, 50176)
    compat.set_image_pixel_limits(plain, 784, 12544)
    assert (plain.min_pixels, plain.max_pixels) == (784, 12544) == compat.image_pixel_limits(plain)


def test_registered_attention_is_accepted_and_masks_like_flash_attention():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    def forward(*args, **kwargs):
        return None, None

    compat.register_attention("compat_test_attention", forward)
    compat.register_attention("compat_test_attention", forward)  # idempotent
    assert AttentionInterface()["compat_test_attention"] is forward
    assert (
        ALL_MASK_ATTENTION_FUNCTIONS["compat_test_attention"]
        is ALL_MASK_ATTENTION_FUNCTIONS["flash_attention_2"]
    )


def test_torch_varlen_attn_is_torchs_kernel_where_it_has_one():
    kernel = compat.torch_varlen_attn()
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        assert kernel is None
    else:
        assert kernel is varlen_attn


def test_torchrun_shutdown_timeout_flag_is_what_torchrun_accepts():
    """The probe against torchrun itself: its --help lists the flag exactly where the probe says it has it
    (torch 2.11 has not, the lock's 2.15 has)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert compat.torchrun_has_shutdown_timeout() == ("--shutdown-timeout" in help_text)


# ------------------------------------------------------------------------------------ extension builds
_MODULE_C = """
#include <Python.h>
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%s", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_%s(void) { PyObject *m = PyModule_Create(&def); PyModule_AddIntConstant(m, "answer", 42); return m; }
"""


@pytest.mark.timeout(300)
def test_a_lock_left_by_an_interrupted_build_does_not_stop_the_next_build(tmp_path, caplog):
    """A build killed mid-way (as a first DeepSpeed run interrupted while it compiles its ops) leaves the lock
    file behind; torch 2.11's loader then waited for it forever. The next build goes ahead, in both
    environments: the real loader, on a tiny C module."""
    from torch.utils import cpp_extension

    compat.recover_interrupted_builds()
    build = tmp_path / "build"
    build.mkdir()
    (build / "lock").touch()  # what the interrupted build left
    source = tmp_path / "tiny_ext.c"
    source.write_text(_MODULE_C % ("tiny_ext", "tiny_ext"))
    with caplog.at_level("WARNING", logger="qwenvl.compat"):
        module = cpp_extension.load("tiny_ext", [str(source)], build_directory=str(build), with_cuda=False)
    assert module.answer == 42
    if hasattr(cpp_extension, "FileBaton"):  # the adapted torch says what it did, and removes the file after
        assert f"{build / 'lock'} was left by a build that did not finish" in caplog.text
        assert not (build / "lock").exists()


def test_the_build_lock_belongs_to_a_living_process(tmp_path):
    """While another process holds the lock (building), this one does not take it and waits until it is
    released; then the file is gone and the lock is free."""
    lock = tmp_path / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from qwenvl.compat import LockedBaton; b = LockedBaton(sys.argv[1]); "
            "assert b.try_acquire(); print('held', flush=True); time.sleep(1.5); b.release()",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert holder.stdout.readline().strip() == "held"
    baton = compat.LockedBaton(str(lock))
    assert baton.try_acquire() is False
    baton.wait()
    assert holder.wait(timeout=30) == 0 and not lock.exists()
    assert baton.try_acquire() is True and lock.exists()
    baton.release()
    assert not lock.exists()
    compat.LockedBaton(str(lock)).wait()  # nothing to wait for


@pytest.mark.parametrize(
    ("version", "refused"), [("0.19.6", True), ("0.19.7", True), ("0.19.8", False), ("0.20.1", False)]
)
def test_zero3_on_gloo_is_refused_with_the_fix_where_deepspeed_does_not_wait_for_its_gathers(
    version, refused
):
    problem = compat.zero3_on_gloo_problem(version)
    if refused:
        assert f"DeepSpeed {version} gathers ZeRO-3 parameters over gloo" in problem
        assert problem.endswith("pip install 'deepspeed>=0.19.8'")
    else:
        assert problem is None


def test_a_zero3_run_on_cpu_stops_before_loading_with_a_deepspeed_that_would_train_it_wrongly(monkeypatch):
    import transformers.integrations

    from qwenvl.train import recipe

    monkeypatch.setattr(recipe, "zero3_on_gloo_problem", lambda: compat.zero3_on_gloo_problem("0.19.7"))
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    with pytest.raises(recipe.RecipeError, match=r"DeepSpeed 0\.19\.7 .* pip install 'deepspeed>=0\.19\.8'"):
        recipe.TrainingRecipe.check_software(None)
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: False)
    recipe.TrainingRecipe.check_software(None)  # ZeRO-2, DDP or one process: not affected


def test_the_installed_deepspeed_is_not_refused_and_is_pyprojects_bound():
    """Both environments train ZeRO-3 on CPU processes (the 2-rank tests), so neither may be refused; the bound
    in pyproject.toml is the first version that is not."""
    assert compat.zero3_on_gloo_problem() is None
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"deepspeed>={compat.ZERO3_GLOO_FIXED_IN}" in deps


# --------------------------------------------------------------------------- the two environments' versions
def _pins() -> dict[str, str]:
    pins = {}
    for line in PINS.read_text().splitlines():
        found = re.match(r"^([A-Za-z][\w.-]*)==([\w.+-]+)", line)
        if found:
            pins[found.group(1).lower()] = found.group(2)
    return pins


def test_pyprojects_lower_bounds_are_the_second_environments_pins():
    """The declared range is the tested range: every lower bound of the version-sensitive stack in
    pyproject.toml is the version .ci/low-env.txt pins (and the lock is the other end)."""
    pins = _pins()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {}
    for dep in deps:
        found = re.match(r"^([A-Za-z][\w.-]*)>=([\w.]+)", dep)
        if found:
            bounds[found.group(1).lower()] = found.group(2)
    for name in (
        "torch",
        "torchvision",
        "transformers",
        "accelerate",
        "peft",
        "deepspeed",
        "trl",
        "xgrammar",
    ):
        low = tuple(int(x) for x in pins[name].split("."))
        bound = tuple(int(x) for x in bounds[name].split("."))
        assert low[: len(bound)] == bound, (name, pins[name], bounds[name])
    assert re.search(r"^# python 3\.12$", PINS.read_text(), flags=re.M)


@pytest.mark.skipif(Path(sys.prefix).name != ".venv-low", reason="only in the second environment")
def test_the_second_environment_is_what_its_pins_say():
    for name, version in _pins().items():
        assert metadata.version(name) == version, name
    assert sys.version_info[:2] == (3, 12)
    assert torch.__version__.split("+")[0] == "2.11.0" and transformers.__version__ == "5.17.0"
