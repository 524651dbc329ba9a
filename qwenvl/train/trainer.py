"""The HF Trainer, with the three things Qwen3-VL finetuning needs on top of it.

1. Per-group learning rates that survive DeepSpeed: the optimizer is built here from named parameter groups
   (vision tower / mergers / LLM, decay / no decay). The shipped DeepSpeed configs have no optimizer or
   scheduler block, so DeepSpeed uses this optimizer and the Trainer's cosine schedule. With the optimizer
   offloaded to CPU the same groups go to DeepSpeedCPUAdam (ZeRO-Offload refuses a plain torch optimizer).
2. Loss normalised per supervised token across gradient accumulation (and across ranks): the loss of a
   micro-batch is its summed token cross-entropy divided by the number of supervised tokens in the whole
   optimizer step, which the Trainer counts when a ``compute_loss_func`` is given. ``--loss_normalisation
   sample`` / ``dataset`` weigh each sample (or each dataset) of the step equally instead, from counts over
   the whole step gathered before its first micro-batch (:mod:`qwenvl.train.loss`). Logits are computed only
   for the (row, position) pairs that predict a supervised token: FLARE answers are a few tokens after
   hundreds of prompt and image tokens, and a 151,936-way vocabulary projection of every position would
   dominate time and memory. The model's forward keeps the positions supervised in any row
   (``logits_to_keep``), and a hook on the output projection keeps, of those, each row's own ones: in a
   padded batch the rows' answers sit at different positions, so the union alone would project the batch
   size times too many. The loss is exactly the same.
3. A vision keep-alive: when a micro-batch has no image (training or evaluation, vision side trainable or
   frozen), a one-token dummy image is appended after the last real token (labels -100). Every rank then runs
   the same modules in the same order (vision tower, then LLM): under ZeRO-3 frozen parameters are partitioned
   too, so a rank that skipped the tower would leave the others waiting in its parameter gathers. Tokens after
   the last real one cannot change any earlier position, so the loss and the gradients are exact.
4. A micro-batch whose every item was skipped (an image that fails to decode, a record that no longer
   encodes, an empty pack) still runs the forward (same collectives on every rank) but contributes a zero
   loss and zero gradients; it is counted (``empty_batches``) and its records are named in the log
   (``skipped_records``: dataset, record index, file, reason). When every micro-batch of an optimizer step is
   empty on every rank (the step's global supervised-token count is 0), the optimizer step itself is skipped:
   AdamW would still move the weights through weight decay and its momentum. Such steps are counted
   (``skipped_steps``) and logged with their step number.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import types
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.loss.loss_utils import ForCausalLMLoss

from qwenvl.data.packing import PackedBatchSampler, PackedEpochCallback, packed_dataloader, unshard
from qwenvl.data.processing import IGNORE_INDEX
from qwenvl.train.loss import TOKEN, StepCounts, sample_weights, weighted_token_loss
from qwenvl.train.params import group_learning_rates, optimizer_param_groups

STAT_PREFIX = "stat_"
logger = logging.getLogger(__name__)


def causal_lm_loss(outputs, labels, num_items_in_batch=None):
    """Summed token cross-entropy / supervised tokens of the optimizer step (mean when not given).

    ``labels`` are the usual unshifted labels over the full sequence."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    return ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch)


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose next token is supervised in any row (the positions whose logits matter)."""
    keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    return keep if keep.numel() else torch.zeros(1, dtype=torch.long, device=labels.device)


def kept_positions_loss(logits: torch.Tensor, targets: torch.Tensor, num_items_in_batch=None):
    """The causal LM loss from the logits of the supervised (row, position) pairs only (``[..., N, vocab]``)
    and their ``N`` target tokens."""
    total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets, reduction="sum")
    if num_items_in_batch is None:
        num_items_in_batch = max(targets.numel(), 1)
    return total / num_items_in_batch


@contextmanager
def project_rows(head: torch.nn.Module, rows: torch.Tensor):
    """While active, the output projection ``head`` sees only the hidden states that ``rows`` selects (a
    ``[batch, kept positions]`` mask over its input) and returns ``[1, N, vocab]`` logits. A forward
    pre-hook, so the model's own forward (DDP, DeepSpeed and PEFT wrappers included) still runs whole."""
    handle = head.register_forward_pre_hook(lambda _, args: (args[0][rows].unsqueeze(0), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


KILL_DURING_SAVE_ENV = "QWENVL_TEST_KILL_DURING_SAVE"


def _kill_for_test(step: int, rank: int) -> None:
    """Fault injection for the tests, inert unless ``QWENVL_TEST_KILL_DURING_SAVE=<step>:<rank>`` is set: that
    rank SIGKILLs itself in the save of that step, after writing its part of the checkpoint and before the
    completion marker (the moment a crash or a scheduler's hard kill leaves a folder that looks whole)."""
    target = os.environ.get(KILL_DURING_SAVE_ENV)
    if target and target == f"{step}:{rank}":
        logger.warning(
            "%s=%s: killing rank %d in the save of step %d", KILL_DURING_SAVE_ENV, target, rank, step
        )
        os.kill(os.getpid(), signal.SIGKILL)


class QwenVLTrainerMixin:
    """What every Qwen3-VL trainer of the toolkit adds to an HF ``Trainer`` subclass (the supervised
    :class:`QwenVLTrainer`, the GRPO trainer): per-group learning rates (:meth:`create_optimizer`),
    checkpoints with extra files and a completion marker (:meth:`_save_checkpoint`) and the vision keep-alive
    (:meth:`_add_dummy_image`). List it before the Trainer class and call :meth:`_init_qwenvl` after the
    Trainer's ``__init__``."""

    def _init_qwenvl(self, vision_lr=None, merger_lr=None) -> None:
        self.group_lrs = group_learning_rates(self.args.learning_rate, vision_lr, merger_lr)
        self.vision_keep_alive = True
        # Called by rank 0 with each checkpoint folder once every rank's files are in, before its marker.
        self.checkpoint_writers: list = []
        self.skipped_steps = 0  # optimizer steps skipped because no rank had a supervised token
        self._step_is_empty = False  # set by compute_loss for the step about to be taken

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
        self._skip_empty_steps(self.optimizer)
        if self.is_world_process_zero():
            summary = ", ".join(f"{g['name']} lr={g['lr']:.2e} ({len(g['params'])} tensors)" for g in groups)
            logger.info("Optimizer: %s with groups %s", type(self.optimizer).__name__, summary)
        return self.optimizer

    def _skip_empty_steps(self, optimizer) -> None:
        """Make ``optimizer.step`` a no-op for a step without a single supervised token on any rank.

        Patched on the instance (as a bound method, which the LR scheduler's own wrapper expects) so that it
        holds wherever the step is called from: the Trainer's loop, or DeepSpeed's engine, which steps this
        optimizer (its base optimizer) itself."""
        step = optimizer.step
        trainer = self

        def guarded(opt, *args, **kwargs):
            if not trainer._step_is_empty:
                return step(*args, **kwargs)
            trainer._step_is_empty = False
            trainer.skipped_steps += 1
            logger.warning(
                "step %d: every micro-batch on every rank was empty (all its records skipped): optimizer step "
                "skipped, weights unchanged",
                trainer.state.global_step + 1,
            )
            return None

        optimizer.step = types.MethodType(guarded, optimizer)

    # -- checkpoints ------------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint, then (rank 0, once every rank has written its part) the extra files of
        :attr:`checkpoint_writers` and the completion marker, written last; older checkpoints are rotated
        out only after that, so a process killed mid-save always leaves the previous complete one."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
        from transformers.trainer_utils import rotate_checkpoints as rotate

        from qwenvl.train.callbacks import mark_checkpoint_complete

        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        run_dir = self._get_output_dir(trial=trial)
        folder = Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        _kill_for_test(self.state.global_step, self.args.process_index)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            for write in self.checkpoint_writers:
                write(folder)
            mark_checkpoint_complete(folder, self.state.global_step)
            if limit:
                rotate(
                    output_dir=run_dir,
                    save_total_limit=limit,
                    best_model_checkpoint=self.state.best_model_checkpoint,
                    use_mtime=True,
                )
        self.accelerator.wait_for_everyone()

    # -- loss -------------------------------------------------------------------------------------------
    def _add_dummy_image(self, model, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        """For an image-less micro-batch: append ``<|vision_start|><|image_pad|>
        <|vision_end|>`` with a blank 32x32 image after the last position (row 0; pads elsewhere), labels -100.
        Returns the extended labels; ``inputs`` is extended in place."""
        if "pixel_values" in inputs or not self.vision_keep_alive:
            return labels
        inner = self.accelerator.unwrap_model(model)
        if hasattr(inner, "get_base_model"):  # a PEFT (LoRA) wrapper
            inner = inner.get_base_model()
        visual = getattr(getattr(inner, "model", inner), "visual", None)
        if visual is None:
            return labels
        cfg, vc = inner.config, inner.config.vision_config
        ids = inputs["input_ids"]
        rows, length = ids.shape
        pad = self.processing_class.tokenizer.pad_token_id if self.processing_class is not None else 0
        extra = torch.full((rows, 3), pad, dtype=ids.dtype, device=ids.device)
        extra[0] = torch.tensor([cfg.vision_start_token_id, cfg.image_token_id, cfg.vision_end_token_id])
        inputs["input_ids"] = torch.cat([ids, extra], dim=1)
        if "attention_mask" in inputs:
            mask = torch.zeros((rows, 3), dtype=inputs["attention_mask"].dtype, device=ids.device)
            mask[0] = 1
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"], mask], dim=1)
        if "position_ids" in inputs:
            pos = inputs["position_ids"]  # (4, rows, length): continue each row's positions
            step = torch.arange(1, 4, device=pos.device).view(1, 1, 3)
            inputs["position_ids"] = torch.cat([pos, pos[..., -1:] + step], dim=2)
        dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
        merge = vc.spatial_merge_size
        param = next(visual.parameters())
        inputs["pixel_values"] = torch.zeros(merge * merge, dim, device=ids.device, dtype=param.dtype)
        inputs["image_grid_thw"] = torch.tensor([[1, merge, merge]], device=ids.device)
        ignore = torch.full((rows, 3), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
        return torch.cat([labels, ignore], dim=1)


class QwenVLTrainer(QwenVLTrainerMixin, Trainer):
    """``Trainer`` with per-group learning rates, per-token loss, the vision keep-alive and batch statistics."""

    def __init__(
        self, *args, vision_lr=None, merger_lr=None, packing_max_tokens: int | None = None, **kwargs
    ):
        kwargs.setdefault("compute_loss_func", causal_lm_loss)
        super().__init__(*args, **kwargs)
        self._init_qwenvl(vision_lr, merger_lr)
        self.loss_normalisation = getattr(self.args, "loss_normalisation", TOKEN)
        self._step_counts: StepCounts | None = None  # samples of the optimizer step about to be taken
        self.packing_max_tokens = packing_max_tokens
        self.packed_sampler: PackedBatchSampler | None = None
        self._packed_epochs: PackedEpochCallback | None = None
        self._window_step = 0
        # Totals since the start of this process, and since the last log line.
        self.batch_stats = {
            "num_samples": 0,
            "num_skipped": 0,
            "num_tokens": 0,
            "num_positions": 0,
            "num_supervised": 0,
            "num_empty_batches": 0,
        }
        self.skipped_records: list[str] = []  # named skipped records since the last log line (this rank)
        self._window_stats = dict.fromkeys(self.batch_stats, 0)
        self._step_lrs: dict[str, float] = {}
        self.add_callback(_StepLRRecorder(self))

    # -- data -------------------------------------------------------------------------------------------
    def get_train_dataloader(self):
        """Padded batches as usual; with ``packing_max_tokens``, packs of whole samples from
        :class:`PackedBatchSampler` (``per_device_train_batch_size`` packs per micro-batch, one row)."""
        if self.packing_max_tokens is None:
            return super().get_train_dataloader()
        if self.train_dataset is None or not hasattr(self.train_dataset, "lengths"):
            raise ValueError("packing needs a training dataset with per-sample token lengths (.lengths)")
        args = self.args
        sampler = PackedBatchSampler(
            self.train_dataset.lengths,
            self.packing_max_tokens,
            packs_per_batch=args.per_device_train_batch_size,
            num_replicas=args.world_size,
            rank=args.process_index,
            seed=args.data_seed if args.data_seed is not None else args.seed,
        )
        loader = self.accelerator.prepare(
            packed_dataloader(self.train_dataset, sampler, self.data_collator, args)
        )
        unshard(loader, sampler)
        steps_per_epoch = math.ceil(len(sampler) / args.gradient_accumulation_steps)
        if self._packed_epochs is None:
            self._packed_epochs = PackedEpochCallback(sampler, steps_per_epoch)
            self.add_callback(self._packed_epochs)
        self._packed_epochs.sampler, self._packed_epochs.steps_per_epoch = sampler, max(steps_per_epoch, 1)
        self.packed_sampler = sampler
        if self.is_world_process_zero():
            logger.info("Packing: %s", sampler.summary(0).describe())
        return loader

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The Trainer's micro-batches of one optimizer step, and with sample or dataset normalisation their
        sample counts over every rank (:class:`~qwenvl.train.loss.StepCounts`), before the first one runs."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.loss_normalisation != TOKEN:
            counts = StepCounts.of_batches(batches)
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                parts: list = [None] * dist.get_world_size()
                dist.all_gather_object(parts, counts)
                counts = StepCounts.merged(parts)
            self._step_counts = counts
        return batches, num_items

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stats = {k[len(STAT_PREFIX) :]: inputs.pop(k) for k in list(inputs) if k.startswith(STAT_PREFIX)}
        skipped = inputs.pop("skipped_records", None) or []
        datasets = inputs.pop("sample_datasets", None) or []
        sample_index = inputs.pop("sample_index", None)
        labels = inputs.pop("labels")
        empty = not bool((labels[:, 1:] != IGNORE_INDEX).any())
        if model.training:
            stats["num_empty_batches"] = int(empty)
            for key in self.batch_stats:
                value = int(stats.get(key, 0))
                self.batch_stats[key] += value
                self._window_stats[key] += value
            if skipped:
                self.skipped_records.extend(skipped)
                logger.warning(
                    "rank %d: %d record(s) skipped in this micro-batch%s: %s",
                    self.args.process_index,
                    len(skipped),
                    " (nothing left: zero loss)" if empty else "",
                    "; ".join(skipped),
                )
            # num_items_in_batch counts the supervised tokens of the whole optimizer step, all ranks summed
            # (unless average_tokens_across_devices is off: then only this rank's, which proves nothing).
            global_count = self.args.average_tokens_across_devices or self.args.world_size == 1
            self._step_is_empty = bool(
                empty and global_count and num_items_in_batch is not None and int(num_items_in_batch) == 0
            )
        keep = supervised_positions(labels)
        labels = self._add_dummy_image(model, inputs, labels)
        if empty:
            # Nothing to learn from, but the forward still runs: every rank takes part in the same gathers.
            outputs = model(**inputs, logits_to_keep=1, use_cache=False)
            loss = outputs.logits.float().sum() * 0.0
            return (loss, outputs) if return_outputs else loss
        targets = labels[:, keep + 1]
        rows = targets != IGNORE_INDEX
        with project_rows(self.accelerator.unwrap_model(model).get_output_embeddings(), rows):
            outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
        if self.loss_normalisation == TOKEN or sample_index is None:
            loss = kept_positions_loss(outputs.logits, targets[rows], num_items_in_batch)
            global_counts = self.args.average_tokens_across_devices and num_items_in_batch is not None
        else:
            # Each sample (or dataset) of the step weighs the same; the step's counts span every rank when
            # training, only this micro-batch when evaluating.
            counts = self._step_counts if model.training and self._step_counts else None
            global_counts = counts is not None
            counts = counts or StepCounts.of_batches([{"sample_datasets": datasets}])
            weights = sample_weights(self.loss_normalisation, datasets, counts)
            token_sample = sample_index[:, keep + 1][rows]
            loss = weighted_token_loss(outputs.logits, targets[rows], token_sample, weights)
        if global_counts:
            # The Trainer averages gradients over ranks; the counts already span all ranks.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _gather_skipped(self) -> tuple[list[str], int, int]:
        """``(names, skipped samples, empty micro-batches)`` over every rank: the skipped-record names since
        the last log line and the running counts, summed (each rank calls ``log`` at the same step, so a record
        that failed on another rank is counted where it is named); clears this rank's list of names."""
        mine = (self.skipped_records, self.batch_stats["num_skipped"], self.batch_stats["num_empty_batches"])
        self.skipped_records = []
        parts: list = [mine]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, mine)
        return (
            [name for part in parts for name in part[0]],
            sum(p[1] for p in parts),
            sum(p[2] for p in parts),
        )

    # -- logging ----------------------------------------------------------------------------------------
    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self._window_stats["num_positions"]:
            w = self._window_stats
            logs["samples"] = w["num_samples"]
            logs["tokens"] = w["num_tokens"]
            logs["supervised_tokens"] = w["num_supervised"]
            logs["padding_share"] = round(1.0 - w["num_tokens"] / w["num_positions"], 4)
            # The effective batch of one optimizer step (this rank's counts x the number of ranks).
            steps = max(self.state.global_step - self._window_step, 1)
            logs["samples_per_step"] = round(w["num_samples"] * self.args.world_size / steps, 2)
            logs["tokens_per_step"] = round(w["num_tokens"] * self.args.world_size / steps, 1)
            self._window_step = self.state.global_step
            self._window_stats = dict.fromkeys(self.batch_stats, 0)
        if "loss" in logs:
            logs.update(self._step_lrs)
            skipped, logs["skipped_samples"], logs["empty_batches"] = self._gather_skipped()
            logs["skipped_steps"] = self.skipped_steps
            if skipped:
                logs["skipped_records"] = "; ".join(skipped)
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

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._window_step = state.global_step

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._record_step_lrs()
