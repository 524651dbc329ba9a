"""Arguments of ``train_qwen.py``: three dataclasses parsed by ``HfArgumentParser``.

Every ``transformers.TrainingArguments`` flag works as usual (``--deepspeed``, ``--bf16``, ``--save_steps``,
``--report_to``...). ``check_arguments`` reports every invalid combination at once, with its fix, before the
model is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import transformers


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="Qwen/Qwen3-VL-4B-Instruct",
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
        default=None,
        metadata={"help": "sdpa (default), flash_attention_2 (if installed) or eager."},
    )


@dataclass
class DataArguments:
    dataset_use: str = field(
        default="",
        metadata={
            "help": "Comma-separated registered names with optional %NN sampling, e.g. "
            "flare_retino%100,flare_busi_det%50 (see qwenvl/data/__init__.py). A path to a Qwen3-VL JSON works too."
        },
    )
    eval_dataset_use: str = field(
        default="",
        metadata={
            "help": "Labelled validation sets for eval loss, e.g. flare_retino_val,flare_busi_det_val."
        },
    )
    max_pixels: int = field(
        default=50176, metadata={"help": "Most pixels per image after resizing (50176 = 49 visual tokens)."}
    )
    min_pixels: int = field(default=784, metadata={"help": "Fewest pixels per image after resizing."})
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

    @property
    def packing(self) -> bool:
        """Whether training batches are packed (``--data_flatten`` or ``--data_packing``)."""
        return self.data_flatten or self.data_packing


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    model_max_length: int = field(
        default=4096,
        metadata={
            "help": "Longest sample in tokens (image tokens included). Longer samples are dropped before "
            "training and reported, never truncated."
        },
    )
    mm_projector_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the mergers (default: --learning_rate)."}
    )
    vision_tower_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the vision tower (default: --learning_rate)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator builds exactly the model's inputs."}
    )
    lora_enable: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters instead of the full LLM (base weights frozen; fits a 24 GB GPU "
            "without DeepSpeed). The tune flags still decide what else trains fully, e.g. the mergers with "
            "--tune_mm_mlp True. Checkpoints hold the adapter; scripts/merge_lora.py makes a full model."
        },
    )
    lora_r: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        metadata={"help": "Comma-separated names of the language model's linear layers that get adapters."},
    )
    lora_vision: bool = field(
        default=False,
        metadata={"help": "Also put adapters on every linear layer of the vision blocks."},
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
        super().__post_init__()


class ArgumentError(ValueError):
    """Several invalid settings, each with its fix."""


def check_arguments(
    model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments
) -> list[str]:
    """Return every problem with the combination of arguments (empty list: all good)."""
    problems: list[str] = []
    if not data_args.dataset_use:
        problems.append("--dataset_use is empty: name the training sets, e.g. --dataset_use flare_retino%100")
    lora_vision = args.lora_enable and args.lora_vision
    if not (model_args.tune_mm_vision or model_args.tune_mm_mlp or model_args.tune_mm_llm or lora_vision):
        problems.append(
            "nothing to train: --tune_mm_vision, --tune_mm_mlp and --tune_mm_llm are all False; set one to True"
        )
    problems.extend(_lora_problems(model_args, args))
    packing_budget = data_args.packing_max_tokens
    if packing_budget is not None and packing_budget < args.model_max_length:
        problems.append(
            f"--packing_max_tokens {packing_budget} is below --model_max_length {args.model_max_length}: a "
            "sample that long would fit no pack; raise --packing_max_tokens or lower --model_max_length"
        )
    if packing_budget is not None and not data_args.packing:
        problems.append(
            "--packing_max_tokens is set but packing is off: add --data_flatten True or drop the budget"
        )
    if args.vision_tower_lr is not None and not model_args.tune_mm_vision:
        problems.append(
            "--vision_tower_lr is set but the vision tower is frozen: add --tune_mm_vision True or drop the lr"
        )
    if args.mm_projector_lr is not None and not model_args.tune_mm_mlp:
        problems.append(
            "--mm_projector_lr is set but the mergers are frozen: add --tune_mm_mlp True or drop the lr"
        )
    if data_args.min_pixels > data_args.max_pixels:
        problems.append(
            f"--min_pixels {data_args.min_pixels} is larger than --max_pixels {data_args.max_pixels}; "
            "swap them or lower --min_pixels"
        )
    if data_args.max_pixels < 32 * 32:
        problems.append(
            f"--max_pixels {data_args.max_pixels} is below one visual token (32x32 = 1024 pixels); use >= 1024"
        )
    if data_args.generation_eval_steps < 0 or data_args.generation_eval_samples < 1:
        problems.append("--generation_eval_steps must be >= 0 and --generation_eval_samples >= 1")
    if args.model_max_length < 64:
        problems.append(f"--model_max_length {args.model_max_length} is too short for any sample; use >= 64")
    eval_on = str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"
    if eval_on and not data_args.eval_dataset_use:
        problems.append(
            f"--eval_strategy {args.eval_strategy} needs labelled validation data: add --eval_dataset_use "
            "flare_<name>_val,... (converted from validation-public), or --eval_strategy no"
        )
    if data_args.eval_dataset_use and not eval_on:
        problems.append(
            "--eval_dataset_use is set but --eval_strategy is 'no', so it would never be used: add "
            "--eval_strategy steps --eval_steps N"
        )
    if args.bf16 and args.fp16:
        problems.append("--bf16 and --fp16 are both set: choose one (bf16 on Ampere or newer GPUs)")
    if args.resume_from_checkpoint not in (None, "auto") and not Path(args.resume_from_checkpoint).is_dir():
        problems.append(
            f"--resume_from_checkpoint {args.resume_from_checkpoint}: no such checkpoint folder; give a "
            "checkpoint-N folder or 'auto' (the latest in --output_dir)"
        )
    local = Path(os.path.expanduser(model_args.model_name_or_path))
    looks_local = local.is_absolute() or model_args.model_name_or_path.startswith((".", "~"))
    if looks_local and not (local / "config.json").is_file():
        problems.append(
            f"--model_name_or_path {model_args.model_name_or_path}: no config.json there. Give a model folder, "
            "a checkpoint-N folder, or a hub id such as Qwen/Qwen3-VL-4B-Instruct"
        )
    return problems


def _lora_problems(model_args: ModelArguments, args: TrainingArguments) -> list[str]:
    problems: list[str] = []
    if not args.lora_enable:
        if args.lora_vision:
            problems.append("--lora_vision needs --lora_enable True")
        return problems
    if args.lora_r < 1 or args.lora_alpha <= 0 or not 0.0 <= args.lora_dropout < 1.0:
        problems.append(
            f"LoRA settings r={args.lora_r}, alpha={args.lora_alpha}, dropout={args.lora_dropout}: need r >= 1, "
            "alpha > 0 and 0 <= dropout < 1"
        )
    if not [m for m in args.lora_target_modules.split(",") if m.strip()]:
        problems.append(
            "--lora_target_modules is empty; the default is q_proj,k_proj,v_proj,o_proj,gate_proj,..."
        )
    if args.lora_vision and model_args.tune_mm_vision:
        problems.append(
            "--lora_vision with --tune_mm_vision True would train the vision blocks twice (fully and through "
            "adapters): choose one"
        )
    return problems


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


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    import sys

    argv, missing_deepspeed = _pop_missing_deepspeed(list(sys.argv[1:] if argv is None else argv))
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    problems = check_arguments(model_args, data_args, training_args)
    if missing_deepspeed:
        problems.append(missing_deepspeed)
    if problems:
        raise ArgumentError(
            f"{len(problems)} problem(s) with the arguments:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return model_args, data_args, training_args
