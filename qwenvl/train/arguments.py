"""Arguments of ``train_qwen.py``: one small dataclass per concern, parsed together by ``HfArgumentParser``.

- ``ModelArguments``: which checkpoint, what trains (``--tune_mm_*``), the attention implementation;
- ``DataArguments``: training and eval sets, image pixel limits, the longest sample;
- ``PackingArguments``: padding-free packing (``--data_flatten``, ``--packing_max_tokens``);
- ``LoraArguments``: LoRA adapters (``--lora_*``);
- ``GenerationEvalArguments``: generation metrics during training (``--generation_eval_*``);
- ``TrainingArguments``: the HF Trainer's own flags (``--deepspeed``, ``--bf16``, ``--save_steps``...), plus
  the per-group learning rates and ``--warmup_ratio``.

Every flag keeps one name across the groups, so a command line reads as one flat list. ``SFTArguments`` holds
one instance of each group for a supervised run; ``parse_arguments`` builds it and ``check_arguments`` reports
every invalid combination at once, with its fix, before anything is loaded. Another training mode declares its
own bundle (a :class:`RecipeArguments` subclass with its own ``training`` dataclass) and parses it with
:func:`parse_groups`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import transformers

from qwenvl.compat import hand_on_checkpointing
from qwenvl.flare import defaults
from qwenvl.flare.pixels import (
    AUTO,
    GLOBAL,
    PER_DATASET,
    POLICIES,
    BudgetPlan,
    pixels_to_tokens,
    plan_problems,
)
from qwenvl.train.lora import DEFAULT_TARGETS, LoraSettings
from qwenvl.train.loss import DATASET, NORMALISATIONS, SAMPLE, TOKEN


@dataclass
class ModelArguments:
    """The checkpoint to start from and which of its parts train."""

    model_name_or_path: str = field(
        default=defaults.MODEL,
        metadata={
            "help": "Hub id or local folder of a Qwen3-VL checkpoint (a previous run's checkpoint works too). The "
            "model class is chosen from its config.model_type."
        },
    )
    tune_mm_vision: bool = field(
        default=False, metadata={"help": "Train the vision tower (patch embed + blocks)."}
    )
    tune_mm_mlp: bool = field(
        default=True, metadata={"help": "Train the vision-language mergers (merger + deepstack mergers)."}
    )
    tune_mm_llm: bool = field(
        default=True, metadata={"help": "Train the language model (embeddings, layers, head)."}
    )
    attn_implementation: str | None = field(
        default="auto",
        metadata={
            "help": "auto (default: flash_attention_2 if installed, else sdpa_packed = packed rows without an "
            "LxL mask), flash_attention_2, sdpa_packed, sdpa or eager."
        },
    )


@dataclass
class DataArguments:
    """What the model trains and is evaluated on, and how big one sample may get."""

    dataset_use: str = field(
        default="",
        metadata={
            # argparse formats help with %: "%%" prints "%" (a single "%N" made --help crash)
            "help": "Comma-separated registered names with optional %%NN sampling, e.g. "
            "flare_retino%%100,flare_busi_det%%50 (see qwenvl/data/__init__.py). A path to a Qwen3-VL JSON works "
            "too."
        },
    )
    eval_dataset_use: str = field(
        default="",
        metadata={
            "help": "Labelled validation sets for eval loss, e.g. flare_retino_val,flare_busi_det_val."
        },
    )
    pixel_policy: str = field(
        default=AUTO,
        metadata={
            "help": f"Image budgets. {PER_DATASET}: each dataset's images get the visual tokens the dataset "
            "table gives it (chromosomes and cells many, a jaundice photo few; `python -m "
            f"qwenvl.flare.pixels` lists them). {GLOBAL}: one budget, --min_pixels/--max_pixels, for every "
            f"image (the guide's way). {AUTO} (default): {GLOBAL} when --min_pixels or --max_pixels is given, "
            f"else {PER_DATASET}. Either way NAME@TOKENS in --dataset_use sets one dataset's budget."
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": f"Most pixels per image after resizing (default {defaults.MAX_PIXELS} = "
            f"{pixels_to_tokens(defaults.MAX_PIXELS)} visual tokens of 32x32 pixels): every image's budget "
            f"under --pixel_policy {GLOBAL}, the fallback for datasets outside the table under {PER_DATASET}."
        },
    )
    min_pixels: int | None = field(
        default=None,
        metadata={
            "help": f"Fewest pixels per image after resizing (default {defaults.MIN_PIXELS}); see --max_pixels."
        },
    )
    mixture_temperature: float = field(
        default=1.0,
        metadata={
            "help": "How the training draws are shared between datasets: in proportion to size^(1/T), the "
            "total unchanged (each size after its %%NN). 1 (default) keeps the sizes; 2 draws by the square "
            "root (small datasets seen more often, not absurdly repeated); larger values approach equal "
            "shares. NAME+balanced in --dataset_use also draws a classification / multi-label dataset's "
            "share equally per class."
        },
    )
    model_max_length: int = field(
        default=defaults.MODEL_MAX_LENGTH,
        metadata={
            "help": "Longest sample in tokens (image tokens included). Longer samples are dropped before "
            "training and reported, never truncated."
        },
    )

    def image_plan(self) -> BudgetPlan:
        """The run's image budgets (:func:`qwenvl.data.plan_image_budgets`): the policy resolved, the global
        budget, each dataset's of ``--dataset_use`` / ``--eval_dataset_use``. ``ValueError`` for a malformed
        entry."""
        from qwenvl.data import plan_image_budgets

        return plan_image_budgets(
            self.dataset_use, self.pixel_policy, self.min_pixels, self.max_pixels, self.eval_dataset_use
        )


@dataclass
class PackingArguments:
    """Padding-free packing of whole samples into one row per micro-batch."""

    data_flatten: bool = field(
        default=False,
        metadata={
            "help": "Padding-free packing: whole samples are packed into rows of at most --packing_max_tokens "
            "tokens (no padding, samples never attend to each other); --per_device_train_batch_size then "
            "counts packs per micro-batch. Same as --data_packing."
        },
    )
    data_packing: bool = field(default=False, metadata={"help": "Alias of --data_flatten."})
    packing_max_tokens: int | None = field(
        default=None,
        metadata={"help": "Token budget of one pack with --data_flatten (default: --model_max_length)."},
    )

    @property
    def enabled(self) -> bool:
        """Whether training batches are packed (``--data_flatten`` or ``--data_packing``)."""
        return self.data_flatten or self.data_packing

    def budget(self, model_max_length: int) -> int | None:
        """Tokens of one pack when packing is on (``--packing_max_tokens``, else ``--model_max_length``);
        ``None`` when batches are padded."""
        return (self.packing_max_tokens or model_max_length) if self.enabled else None


@dataclass
class LoraArguments:
    """LoRA adapters instead of a full finetune of the language model (see :mod:`qwenvl.train.lora`)."""

    lora_enable: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters instead of the full LLM (base weights frozen; fits a 24 GB GPU "
            "without DeepSpeed). The tune flags still decide what else trains fully, e.g. the mergers with "
            "--tune_mm_mlp True. Checkpoints hold the adapter; scripts/merge_lora.py makes a full model."
        },
    )
    lora_r: int = field(default=LoraSettings.r, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(
        default=LoraSettings.alpha, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."}
    )
    lora_dropout: float = field(default=LoraSettings.dropout, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default=",".join(DEFAULT_TARGETS),
        metadata={"help": "Comma-separated names of the language model's linear layers that get adapters."},
    )
    lora_vision: bool = field(
        default=False,
        metadata={"help": "Also put adapters on every linear layer of the vision blocks."},
    )


@dataclass
class GenerationEvalArguments:
    """Greedy generation on a small fixed validation subset during training, scored with the FLARE metrics."""

    generation_eval_steps: int = field(
        default=0,
        metadata={
            "help": "Every N optimizer steps, generate on a small fixed validation subset and log FLARE metrics "
            "(gen_<dataset>_<metric>). 0 = off. Slow under ZeRO-3 offload: see docs/evaluation.md."
        },
    )
    generation_eval_samples: int = field(
        default=4, metadata={"help": "Records per validation dataset for --generation_eval_steps."}
    )
    generation_eval_backend: str = field(
        default="hf",
        metadata={
            "help": "hf: the training model's generate; vllm: a vLLM engine in the training process with the "
            "current weights loaded (the vLLM environment, envs/vllm; one process, no ZeRO-3, no LoRA)"
        },
    )


def _generation_backend_problems(gen: GenerationEvalArguments, lora: Any, training: Any) -> list[str]:
    """What rules out ``--generation_eval_backend``'s value for this run."""
    backend = gen.generation_eval_backend
    if backend == "hf":
        return []
    if backend != "vllm":
        return [f"--generation_eval_backend {backend!r}: choose hf or vllm"]
    from qwenvl.eval import vllm_backend

    where = "--generation_eval_backend vllm"
    if not vllm_backend.vllm_available():
        return [f"{where}: vLLM is not installed here. {vllm_backend.INSTALL_HINT}"]
    sync = vllm_backend.weight_sync_problem()
    problems = (
        [f"{where} (the engine takes the training weights before each evaluation): {sync}"] if sync else []
    )
    if lora.lora_enable:
        problems.append(f"{where} loads whole weights into the engine: not with --lora_enable (use hf)")
    if getattr(training, "deepspeed", None):
        problems.append(f"{where} needs whole weights in one process: not with --deepspeed (use hf)")
    return problems


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """The HF Trainer's flags, plus the per-group learning rates of
    :class:`~qwenvl.train.trainer.QwenVLTrainer` and the guide's ``--warmup_ratio``."""

    mm_projector_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the mergers (default: --learning_rate)."}
    )
    vision_tower_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the vision tower (default: --learning_rate)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator builds exactly the model's inputs."}
    )
    dataloader_pin_memory: bool = field(
        default_factory=_cuda_available,
        metadata={
            "help": "Pin batches in page-locked memory for faster copies to the GPU (default: on with "
            "CUDA, off without: there is nothing to copy to, and the dataloader would warn on every run)."
        },
    )
    loss_normalisation: str = field(
        default=TOKEN,
        metadata={
            "help": f"How an optimizer step's loss is averaged. {TOKEN} (default, the guide's): over every "
            f"supervised token, so a 1,100-token chromosome answer outweighs hundreds of one-letter answers. "
            f"{SAMPLE}: each sample's tokens averaged, then the samples. {DATASET}: each sample's tokens "
            "averaged, the samples of each dataset averaged, then the datasets of the step. Exact under "
            "gradient accumulation, padding, packing and several processes."
        },
    )
    warmup_ratio: float = field(
        default=0.0,
        metadata={
            "help": "Fraction of the total steps used for linear warmup (the guide's flag; transformers 5 "
            "folded it into --warmup_steps, which this sets). Give this or --warmup_steps, not both."
        },
    )

    def __post_init__(self):
        if self.warmup_ratio:
            if not 0 < self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio {self.warmup_ratio} must be in [0, 1), e.g. 0.03")
            if self.warmup_steps:
                raise ValueError("give --warmup_ratio or --warmup_steps, not both")
            self.warmup_steps = self.warmup_ratio  # a float below 1 is a ratio of the total steps
        # The guide's --gradient_checkpointing: under the name this transformers reads, without its warning.
        hand_on_checkpointing(self)
        super().__post_init__()


# ------------------------------------------------------------------------------------------- bundles
@dataclass
class RecipeArguments:
    """The argument groups every training mode shares (see :class:`qwenvl.train.recipe.TrainingRecipe`).

    ``training`` is the mode's Trainer arguments: any ``transformers.TrainingArguments`` subclass (TRL's
    trainer configs are such subclasses). A mode adds its own groups as further fields of a subclass."""

    model: ModelArguments
    data: DataArguments
    lora: LoraArguments
    generation_eval: GenerationEvalArguments
    training: transformers.TrainingArguments

    @classmethod
    def groups(cls) -> dict[str, type]:
        """``{field name: dataclass}`` of the bundle, in field order (what ``HfArgumentParser`` parses)."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    def as_record(self) -> dict[str, dict[str, Any]]:
        """The resolved arguments, one dict per group (``run.json``'s ``args``, ``run_info.json``'s
        ``arguments``); the Trainer's group comes last."""
        record = {
            f.name: dataclasses.asdict(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "training"
        }
        record["training"] = self.training.to_dict()
        return record


@dataclass
class SFTArguments(RecipeArguments):
    """Every argument of a supervised finetune (``train_qwen.py``)."""

    training: TrainingArguments
    packing: PackingArguments


# ---------------------------------------------------------------------------------------------- checks
class ArgumentError(ValueError):
    """Several invalid settings, each with its fix."""


def recipe_problems(args: RecipeArguments) -> list[str]:
    """Problems with the groups every training mode shares (empty list: all good)."""
    model, data, lora, training = args.model, args.data, args.lora, args.training
    problems: list[str] = []
    if not data.dataset_use:
        problems.append("--dataset_use is empty: name the training sets, e.g. --dataset_use flare_retino%100")
    lora_vision = lora.lora_enable and lora.lora_vision
    if not (model.tune_mm_vision or model.tune_mm_mlp or model.tune_mm_llm or lora_vision):
        problems.append(
            "nothing to train: --tune_mm_vision, --tune_mm_mlp and --tune_mm_llm are all False; set one to True"
        )
    problems.extend(_lora_problems(model, lora))
    problems.extend(_data_problems(data))
    gen = args.generation_eval
    if gen.generation_eval_steps < 0 or gen.generation_eval_samples < 1:
        problems.append("--generation_eval_steps must be >= 0 and --generation_eval_samples >= 1")
    problems.extend(_generation_backend_problems(gen, lora, training))
    eval_on = str(getattr(training.eval_strategy, "value", training.eval_strategy)) != "no"
    if eval_on and not data.eval_dataset_use:
        problems.append(
            f"--eval_strategy {training.eval_strategy} needs labelled validation data: add --eval_dataset_use "
            "flare_<name>_val,... (converted from validation-public), or --eval_strategy no"
        )
    if data.eval_dataset_use and not eval_on:
        problems.append(
            "--eval_dataset_use is set but --eval_strategy is 'no', so it would never be used: add "
            "--eval_strategy steps --eval_steps N"
        )
    if training.bf16 and training.fp16:
        problems.append("--bf16 and --fp16 are both set: choose one (bf16 on Ampere or newer GPUs)")
    resume = training.resume_from_checkpoint
    if resume not in (None, "auto") and not Path(resume).is_dir():
        problems.append(
            f"--resume_from_checkpoint {resume}: no such checkpoint folder; give a "
            "checkpoint-N folder or 'auto' (the latest in --output_dir)"
        )
    local = Path(os.path.expanduser(model.model_name_or_path))
    looks_local = local.is_absolute() or model.model_name_or_path.startswith((".", "~"))
    if looks_local and not (local / "config.json").is_file():
        problems.append(
            f"--model_name_or_path {model.model_name_or_path}: no config.json there. Give a model folder, "
            f"a checkpoint-N folder, or a hub id such as {defaults.MODEL}"
        )
    if training.vision_tower_lr is not None and not model.tune_mm_vision:
        problems.append(
            "--vision_tower_lr is set but the vision tower is frozen: add --tune_mm_vision True or drop the lr"
        )
    if training.mm_projector_lr is not None and not model.tune_mm_mlp:
        problems.append(
            "--mm_projector_lr is set but the mergers are frozen: add --tune_mm_mlp True or drop the lr"
        )
    return problems


def check_arguments(args: SFTArguments) -> list[str]:
    """Every problem with the combination of a supervised run's arguments (empty list: all good)."""
    problems = recipe_problems(args)
    data, packing = args.data, args.packing
    if args.training.loss_normalisation not in NORMALISATIONS:
        problems.append(
            f"--loss_normalisation {args.training.loss_normalisation!r}: choose one of {', '.join(NORMALISATIONS)}"
        )
    budget = packing.packing_max_tokens
    if budget is not None and budget < data.model_max_length:
        problems.append(
            f"--packing_max_tokens {budget} is below --model_max_length {data.model_max_length}: a "
            "sample that long would fit no pack; raise --packing_max_tokens or lower --model_max_length"
        )
    if budget is not None and not packing.enabled:
        problems.append(
            "--packing_max_tokens is set but packing is off: add --data_flatten True or drop the budget"
        )
    return problems


def _data_problems(data: DataArguments) -> list[str]:
    problems: list[str] = []
    if data.pixel_policy not in POLICIES:
        problems.append(f"--pixel_policy {data.pixel_policy!r}: choose one of {', '.join(POLICIES)}")
    elif data.dataset_use:
        try:
            problems.extend(plan_problems(data.image_plan()))
        except ValueError as e:
            problems.append(str(e))
    if not (math.isfinite(data.mixture_temperature) and data.mixture_temperature > 0):
        problems.append(
            f"--mixture_temperature {data.mixture_temperature} must be a positive number (1: the datasets' "
            "sizes, 2: their square roots)"
        )
    if data.model_max_length < 64:
        problems.append(f"--model_max_length {data.model_max_length} is too short for any sample; use >= 64")
    return problems


def _lora_problems(model: ModelArguments, lora: LoraArguments) -> list[str]:
    problems: list[str] = []
    if not lora.lora_enable:
        if lora.lora_vision:
            problems.append("--lora_vision needs --lora_enable True")
        return problems
    if lora.lora_r < 1 or lora.lora_alpha <= 0 or not 0.0 <= lora.lora_dropout < 1.0:
        problems.append(
            f"LoRA settings r={lora.lora_r}, alpha={lora.lora_alpha}, dropout={lora.lora_dropout}: need r >= 1, "
            "alpha > 0 and 0 <= dropout < 1"
        )
    if not [m for m in lora.lora_target_modules.split(",") if m.strip()]:
        problems.append(
            "--lora_target_modules is empty; the default is q_proj,k_proj,v_proj,o_proj,gate_proj,..."
        )
    if lora.lora_vision and model.tune_mm_vision:
        problems.append(
            "--lora_vision with --tune_mm_vision True would train the vision blocks twice (fully and through "
            "adapters): choose one"
        )
    return problems


# ---------------------------------------------------------------------------------------------- parsing
def _pop_missing_deepspeed(argv: list[str]) -> tuple[list[str], str | None]:
    """TrainingArguments raises on a missing DeepSpeed file before anything else can be checked: take it out
    of the arguments (and report it with the rest)."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--deepspeed" and i + 1 < len(argv) else None
        if arg.startswith("--deepspeed="):
            value = arg.split("=", 1)[1]
        if value and not value.lstrip().startswith("{") and not Path(value).is_file():
            span = 2 if arg == "--deepspeed" else 1
            return argv[:i] + argv[
                i + span :
            ], f"--deepspeed {value}: no such file; the shipped configs are in configs/"
    return argv, None


Bundle = TypeVar("Bundle", bound=RecipeArguments)


def parse_groups(
    bundle: type[Bundle], argv: Sequence[str] | None, check: Callable[[Bundle], list[str]]
) -> Bundle:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into every group of ``bundle`` with one
    ``HfArgumentParser``, then raise :class:`ArgumentError` listing every problem ``check`` finds (and a
    ``--deepspeed`` file that does not exist)."""
    argv, missing_deepspeed = _pop_missing_deepspeed(list(sys.argv[1:] if argv is None else argv))
    groups = bundle.groups()
    parser = transformers.HfArgumentParser(tuple(groups.values()))
    parsed = parser.parse_args_into_dataclasses(args=argv)
    args = bundle(**dict(zip(groups, parsed)))
    problems = check(args)
    if missing_deepspeed:
        problems.append(missing_deepspeed)
    if problems:
        raise ArgumentError(
            f"{len(problems)} problem(s) with the arguments:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return args


def parse_arguments(argv: Sequence[str] | None = None) -> SFTArguments:
    """The arguments of a supervised run (``train_qwen.py``), checked: :class:`ArgumentError` lists every
    problem at once."""
    return parse_groups(SFTArguments, argv, check_arguments)
