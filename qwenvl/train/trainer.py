"""The HF Trainer, with the three things Qwen3-VL finetuning needs on top of it.

1. Per-group learning rates that survive DeepSpeed: the optimizer is built here from named parameter groups
   (vision tower / mergers / LLM, decay / no decay). The shipped DeepSpeed configs have no optimizer or
   scheduler block, so DeepSpeed uses this optimizer and the Trainer's cosine schedule. With the optimizer
   offloaded to CPU the same groups go to DeepSpeedCPUAdam (ZeRO-Offload refuses a plain torch optimizer).
2. Loss normalised per supervised token across gradient accumulation (and across ranks): the loss of a
   micro-batch is its summed token cross-entropy divided by the number of supervised tokens in the whole
   optimizer step, which the Trainer counts when a ``compute_loss_func`` is given. Logits are computed only
   at the positions that predict a supervised token (``logits_to_keep``): FLARE answers are a few tokens
   after hundreds of prompt and image tokens, and a 151,936-way vocabulary projection of every position
   would dominate time and memory. The loss is exactly the same.
3. A vision keep-alive: when the vision tower or mergers are trainable and a micro-batch has no image, the
   tower runs on a dummy 32x32 patch with zero weight, so every rank runs the same collectives under ZeRO-3
   and DDP never waits for gradients that do not come.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.loss.loss_utils import ForCausalLMLoss

from qwenvl.data.processing import IGNORE_INDEX
from qwenvl.train.params import group_learning_rates, optimizer_param_groups

STAT_PREFIX = "stat_"


def causal_lm_loss(outputs, labels, num_items_in_batch=None):
    """Summed token cross-entropy / supervised tokens of the optimizer step (mean when not given).

    ``labels`` are the usual unshifted labels over the full sequence."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    return ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch)


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose next token is supervised in any row (the positions whose logits matter)."""
    keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    return keep if keep.numel() else torch.zeros(1, dtype=torch.long, device=labels.device)


def kept_positions_loss(
    logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, num_items_in_batch=None
):
    """The causal LM loss from logits computed at ``keep`` only: position p predicts token p + 1."""
    targets = labels[:, keep + 1]
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    if num_items_in_batch is None:
        num_items_in_batch = (targets != IGNORE_INDEX).sum().clamp(min=1)
    return total / num_items_in_batch


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict) or hasattr(obj, "to_tuple"):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


class QwenVLTrainer(Trainer):
    """``Trainer`` with per-group learning rates, per-token loss, the vision keep-alive and batch statistics."""

    def __init__(self, *args, vision_lr=None, merger_lr=None, **kwargs):
        kwargs.setdefault("compute_loss_func", causal_lm_loss)
        super().__init__(*args, **kwargs)
        self.group_lrs = group_learning_rates(self.args.learning_rate, vision_lr, merger_lr)
        # Totals since the start of this process, and since the last log line.
        self.batch_stats = {"num_samples": 0, "num_skipped": 0, "num_tokens": 0, "num_positions": 0}
        self._window_stats = dict.fromkeys(self.batch_stats, 0)
        self._step_lrs: dict[str, float] = {}
        self.add_callback(_StepLRRecorder(self))

    # -- optimizer --------------------------------------------------------------------------------------
    def _optimizer_offloaded(self) -> bool:
        ds = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if ds is None:
            return False
        zero = ds.deepspeed_config.get("zero_optimization", {})
        return str(zero.get("offload_optimizer", {}).get("device", "none")).lower() == "cpu"

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        decay = set(self.get_decay_parameter_names(model))
        groups = optimizer_param_groups(model, self.group_lrs, self.args.weight_decay, decay)
        if self._optimizer_offloaded():
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            self.optimizer = DeepSpeedCPUAdam(
                groups,
                lr=self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
                weight_decay=self.args.weight_decay,
                adamw_mode=True,
            )
        else:
            cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
            kwargs.pop("lr", None)  # every group has its own
            self.optimizer = cls(groups, lr=self.args.learning_rate, **kwargs)
        return self.optimizer

    # -- loss -------------------------------------------------------------------------------------------
    def _vision_keepalive(self, model, inputs) -> torch.Tensor | None:
        if "pixel_values" in inputs:
            return None
        inner = self.accelerator.unwrap_model(model)
        visual = getattr(getattr(inner, "model", inner), "visual", None)
        if visual is None or not any(p.requires_grad for p in visual.parameters()):
            return None
        vc = inner.config.vision_config
        dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
        merge = vc.spatial_merge_size
        param = next(visual.parameters())
        pixels = torch.zeros(merge * merge, dim, device=param.device, dtype=param.dtype)
        grid = torch.tensor([[1, merge, merge]], device=param.device)
        out = visual(pixels, grid_thw=grid)
        return sum(t.float().sum() for t in _tensors(out) if t.is_floating_point()) * 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stats = {k[len(STAT_PREFIX) :]: inputs.pop(k) for k in list(inputs) if k.startswith(STAT_PREFIX)}
        if model.training:
            for key in self.batch_stats:
                value = int(stats.get(key, 0))
                self.batch_stats[key] += value
                self._window_stats[key] += value
        labels = inputs.pop("labels")
        keep = supervised_positions(labels)
        outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
        loss = kept_positions_loss(outputs.logits, labels, keep, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # The Trainer averages gradients over ranks; num_items_in_batch already sums all ranks' tokens.
            loss = loss * self.accelerator.num_processes
        if model.training:
            keepalive = self._vision_keepalive(model, inputs)
            if keepalive is not None:
                loss = loss + keepalive
        return (loss, outputs) if return_outputs else loss

    # -- logging ----------------------------------------------------------------------------------------
    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self._window_stats["num_positions"]:
            w = self._window_stats
            logs["samples"] = w["num_samples"]
            logs["skipped_samples"] = self.batch_stats["num_skipped"]
            logs["tokens"] = w["num_tokens"]
            logs["padding_share"] = round(1.0 - w["num_tokens"] / w["num_positions"], 4)
            self._window_stats = dict.fromkeys(self.batch_stats, 0)
        if "loss" in logs:
            logs.update(self._step_lrs)
        super().log(logs, *args, **kwargs)

    def _record_step_lrs(self) -> None:
        """The learning rate each group used in the optimizer step just taken (before the scheduler moves)."""
        self._step_lrs = {
            f"lr_{g['name']}": g["lr"]
            for g in self.optimizer.param_groups
            if "name" in g and not g["name"].endswith("_no_decay")
        }


class _StepLRRecorder(TrainerCallback):
    def __init__(self, trainer: QwenVLTrainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._record_step_lrs()
