"""Arguments of ``grpo_qwen.py``: the groups every training mode shares, TRL's ``GRPOConfig`` as the
``training`` group, and the rewards.

TRL's defaults are not the model's: ``GRPOConfig`` samples with temperature 1.0 and no top-p / top-k and
leaves the KL term off (beta 0), while Qwen3-VL's generation config samples at temperature 0.7, top-p 0.8,
top-k 20. :class:`GRPOTrainingArguments` states every sampling setting and the KL weight explicitly, so a run's
``run_info.json`` and the launcher's plan say what was used:

============================  ========  ======================================================================
flag                          default   meaning
============================  ========  ======================================================================
``--num_generations``         4         completions sampled per prompt (one GRPO group)
``--temperature``             0.7       sampling temperature of the rollouts (Qwen3-VL's own)
``--top_p``                   0.8       nucleus sampling (Qwen3-VL's own)
``--top_k``                   20        top-k sampling (Qwen3-VL's own)
``--max_completion_length``   128       new tokens per completion (FLARE answers are short; raise it for
                                        report generation)
``--beta``                    0.04      KL weight against the starting model (the GRPO paper's; 0 = no
                                        reference model)
``--loss_type``               dapo      TRL's token-level normalisation (``grpo`` = per-sequence mean)
``--learning_rate``           1e-6      TRL's default for GRPO
============================  ========  ======================================================================

The per-group learning rates (``--vision_tower_lr``, ``--mm_projector_lr``) and ``--warmup_ratio`` come from
the supervised :class:`~qwenvl.train.arguments.TrainingArguments`, which :class:`GRPOTrainingArguments` also
derives from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from trl import GRPOConfig

from qwenvl.flare.rewards import IOU_END, IOU_START
from qwenvl.train.arguments import RecipeArguments, TrainingArguments, parse_groups, recipe_problems

# What the launcher and run_info.json report as the sampling settings of the rollouts.
SAMPLING_FIELDS = ("num_generations", "temperature", "top_p", "top_k", "max_completion_length", "beta")


@dataclass
class GRPOTrainingArguments(GRPOConfig, TrainingArguments):
    """TRL's ``GRPOConfig`` with the model's sampling settings and a KL term by default, plus the toolkit's
    per-group learning rates and ``--warmup_ratio``."""

    # GRPOConfig comes first among the bases, so its copy of transformers' fields would win over the toolkit's
    # own defaults: restate the one that differs (pinned memory only with CUDA; on a CPU it warns every run).
    dataloader_pin_memory: bool = field(
        default_factory=TrainingArguments.__dataclass_fields__["dataloader_pin_memory"].default_factory,
        metadata=TrainingArguments.__dataclass_fields__["dataloader_pin_memory"].metadata,
    )
    num_generations: int | None = field(
        default=4,
        metadata={"help": "Completions sampled per prompt (one group); the global batch must divide by it."},
    )
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature of the rollouts (Qwen3-VL's generation config)."}
    )
    top_p: float = field(default=0.8, metadata={"help": "Nucleus sampling of the rollouts (Qwen3-VL's)."})
    top_k: int = field(default=20, metadata={"help": "Top-k sampling of the rollouts (Qwen3-VL's); 0 = off."})
    max_completion_length: int | None = field(
        default=128, metadata={"help": "New tokens per completion (raise it for report generation)."}
    )
    beta: float = field(
        default=0.04,
        metadata={"help": "KL weight against the starting model (0 = no KL and no reference model)."},
    )
    loss_type: str = field(
        default="dapo",
        metadata={"help": "TRL's loss normalisation: dapo (token-level, default), grpo, dr_grpo, bnpo, ..."},
    )
    log_multimodal: bool = field(
        default=False,
        metadata={
            "help": "Gather the prompt images for the completions table. Off: TRL 1.16 gathers them only on "
            "ranks whose batch has images, so a rank without any waits forever."
        },
    )
    bf16: bool | None = field(
        default=False, metadata={"help": "bf16 mixed precision (the launcher sets it where the GPU has it)."}
    )

    def sampling(self) -> dict[str, float | int | None]:
        """The rollout settings, as the plan and ``run_info.json`` state them."""
        out = {name: getattr(self, name) for name in SAMPLING_FIELDS}
        out["loss_type"] = self.loss_type
        out["rollout_engine"] = "vllm" if self.use_vllm else "transformers generate"
        return out


@dataclass
class RewardArguments:
    """How the per-sample rewards of :mod:`qwenvl.flare.rewards` combine into one."""

    answer_reward_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the answer reward (the challenge's metric on one sample, in [0, 1])."},
    )
    format_reward_weight: float = field(
        default=0.2,
        metadata={"help": "Weight of the format reward (1 when the completion parses for its task type)."},
    )
    iou_schedule: bool = field(
        default=False,
        metadata={
            "help": "Box tasks: raise the IoU threshold of a match linearly from --iou_threshold_start to "
            "--iou_threshold_end over training (default off: the challenge's fixed 0.5)."
        },
    )
    iou_threshold_start: float = field(default=IOU_START, metadata={"help": "IoU threshold at step 0."})
    iou_threshold_end: float = field(default=IOU_END, metadata={"help": "IoU threshold at the last step."})

    def iou_range(self) -> tuple[float, float]:
        """``(start, end)`` of the IoU threshold: the schedule's, or the challenge's 0.5 throughout."""
        return (self.iou_threshold_start, self.iou_threshold_end) if self.iou_schedule else (IOU_END, IOU_END)


@dataclass
class GRPOArguments(RecipeArguments):
    """Every argument of a GRPO run (``grpo_qwen.py``)."""

    training: GRPOTrainingArguments
    rewards: RewardArguments


def check_grpo_arguments(args: GRPOArguments) -> list[str]:
    """Every problem with a GRPO run's arguments (empty list: all good)."""
    problems = recipe_problems(args)
    data, training, rewards = args.data, args.training, args.rewards
    if data.eval_dataset_use:
        problems.append(
            "--eval_dataset_use: GRPO runs no eval loss; measure a checkpoint with scripts/evaluate_flare.py, "
            "or follow the rewards in train_log.jsonl"
        )
    if training.reward_weights is not None:
        problems.append("--reward_weights: set --answer_reward_weight and --format_reward_weight instead")
    if min(rewards.answer_reward_weight, rewards.format_reward_weight) < 0 or not (
        rewards.answer_reward_weight or rewards.format_reward_weight
    ):
        problems.append(
            f"reward weights answer={rewards.answer_reward_weight}, format={rewards.format_reward_weight}: "
            "both must be >= 0 and one > 0"
        )
    lo, hi = rewards.iou_threshold_start, rewards.iou_threshold_end
    if not (0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
        problems.append(f"--iou_threshold_start {lo} / --iou_threshold_end {hi} must lie in [0, 1]")
    if training.use_vllm:
        from qwenvl.eval import vllm_backend

        if not vllm_backend.vllm_available():
            problems.append(f"--use_vllm: vLLM is not installed here. {vllm_backend.INSTALL_HINT}")
        elif training.vllm_mode == "colocate" and (sync := vllm_backend.weight_sync_problem()):
            problems.append(f"--use_vllm (colocate: the engine takes the new weights every step): {sync}")
        if training.vllm_mode not in ("colocate", "server"):
            problems.append(f"--vllm_mode {training.vllm_mode!r}: choose colocate (default) or server")
    if (training.max_completion_length or 0) < 1:
        problems.append("--max_completion_length must be at least 1 (e.g. 128)")
    return problems


def parse_grpo_arguments(argv: Sequence[str] | None = None) -> GRPOArguments:
    """The arguments of a GRPO run, checked: :class:`~qwenvl.train.arguments.ArgumentError` lists every
    problem at once."""
    return parse_groups(GRPOArguments, argv, check_grpo_arguments)
