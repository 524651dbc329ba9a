"""GRPO, the second training stage: reinforcement learning on the challenge's own metrics.

    recipe = GRPORecipe(parse_grpo_arguments(argv))
    recipe.setup()
    recipe.train()

Start from an SFT checkpoint: a model that never writes a valid answer earns reward 0 on every completion,
and a group whose rewards are all equal teaches GRPO nothing. Each training step samples
``--num_generations`` completions per prompt with HF ``generate`` (TRL's ``GRPOTrainer``; no vLLM), scores
each with the task table's rewards (:mod:`qwenvl.flare.rewards`: ``answer`` = the challenge's metric on the
one sample, ``format`` = the answer parses, weighted by ``--answer_reward_weight`` / ``--format_reward_weight``)
and moves the policy towards the completions that beat their group's mean, with a KL term (``--beta``) to
the starting model.

What this module adds to the shared recipe (:mod:`qwenvl.train.recipe`):

- :class:`PromptSet`: the registered datasets' checked records (the supervised checks: structure, images,
  length) as prompts: the record's chat up to its last answer, with the images at their ``<image>`` tags,
  exactly as evaluation renders it (:func:`qwenvl.eval.generate.build_prompt`), plus the reference answer,
  task type, question and dataset the rewards need. Any mix of task types; a record whose reference answer
  does not parse for its task type is dropped and reported.
- left padding: the Qwen3-VL processor computes ``mm_token_type_ids`` on its own padding side, TRL pads the
  prompt ids on the left; right padding in the processor shifts the image-token map of every shorter prompt
  (a crash in ``get_rope_index``, or silently wrong positions).
- :class:`FlareGRPOTrainer`: TRL's trainer with the toolkit's per-group learning rates, self-contained
  checkpoints with their completion marker, the ZeRO-3 vision keep-alive for image-less micro-batches
  (:class:`~qwenvl.train.trainer.QwenVLTrainerMixin`), and the mean reward per task type in every log line.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import torch
from trl import GRPOTrainer

from qwenvl.data.dataset import INVALID_RECORD, SupervisedDataset, log_report
from qwenvl.data.processing import record_to_messages
from qwenvl.flare.images import load_rgb
from qwenvl.flare.rewards import ANSWER, FORMAT, answer_reward, format_reward, iou_threshold_at, reward_notes
from qwenvl.flare.schema import IMAGE_TAG
from qwenvl.flare.tasks import TASK_TYPES, normalize_task_type
from qwenvl.model import ModelNotFoundError
from qwenvl.train.grpo_arguments import GRPOArguments, RewardArguments
from qwenvl.train.recipe import RecipeError, TrainingRecipe, load_training_processor
from qwenvl.train.trainer import QwenVLTrainerMixin

logger = logging.getLogger(__name__)

DUMMY_IMAGE_TOKENS = 3  # <|vision_start|><|image_pad|><|vision_end|> of the keep-alive image
# What each prompt carries besides its messages and images: what the rewards read, and where it came from.
REWARD_COLUMNS = ("reference", "task_type", "question", "dataset", "index")


# ---------------------------------------------------------------------------------------------- prompts
def record_question(record: dict) -> str:
    """The question the rewards read options from: ``meta.question`` (the raw challenge question), else the
    last human turn without its ``<image>`` tags."""
    meta = record.get("meta") or {}
    if isinstance(meta.get("question"), str) and meta["question"]:
        return meta["question"]
    human = [t["value"] for t in record["conversations"] if t.get("from") == "human"]
    return human[-1].replace(IMAGE_TAG, "").strip() if human else ""


def record_prompt(record: dict) -> tuple[list[dict], str]:
    """``(messages, reference)``: the record's chat without its final answer (image items where its
    ``<image>`` tags were, no image attached yet) and that answer."""
    messages = record_to_messages(record)
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the record does not end with an answer (a gpt turn)")
    return messages[:-1], messages[-1]["content"][0]["text"]


class PromptSet:
    """The prompts of a GRPO run: the records of a checked :class:`SupervisedDataset` whose reference answer
    parses for their task type. ``report`` is the supervised report with the records dropped here added
    (reason ``invalid_record``); :meth:`dataset` is the ``datasets.Dataset`` TRL trains on."""

    def __init__(self, checked: SupervisedDataset) -> None:
        self.rows: list[dict[str, Any]] = []
        report = checked.report
        for sample in checked.samples:
            record, src = sample.record, sample.source
            try:
                messages, reference = record_prompt(record)
                task_type = normalize_task_type((record.get("meta") or {}).get("task_type"))
                if task_type is None:
                    raise ValueError(
                        f"meta.task_type {(record.get('meta') or {}).get('task_type')!r} is not one of "
                        f"{', '.join(TASK_TYPES)}: GRPO needs it to score the answers"
                    )
                question = record_question(record)
                answer_reward(task_type, reference, reference, question)  # ValueError: reference unparsable
            except ValueError as e:
                entry = report["datasets"][src["dataset"]]
                entry["kept"] -= 1
                entry["dropped"][INVALID_RECORD] = entry["dropped"].get(INVALID_RECORD, 0) + 1
                report["dropped"].append(
                    {
                        "dataset": src["dataset"],
                        "file": src["file"],
                        "index": src["index"],
                        "reason": INVALID_RECORD,
                        "detail": f"not usable as a GRPO prompt: {e}",
                    }
                )
                continue
            self.rows.append(
                {
                    "messages": messages,
                    "image_paths": list(sample.image_paths),
                    "reference": reference,
                    "task_type": task_type,
                    "question": question,
                    "dataset": str(src["dataset"]),
                    "index": int(src["index"]),
                    "file": str(src["file"]),
                }
            )
        report["total_kept"] = len(self.rows)
        report["task_types"] = dict(Counter(r["task_type"] for r in self.rows))
        self.report = report
        if len(self.rows) != len(checked.samples):
            log_report(report)

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, i: int) -> dict[str, Any]:
        """Row ``i`` as TRL reads it: ``prompt`` (messages), ``images`` (8-bit RGB, in tag order) and the
        reward columns. An image that no longer loads stops the run with the record named (the images
        were checked before training, so it was changed or deleted since)."""
        row = self.rows[i]
        images = []
        for path in row["image_paths"]:
            try:
                images.append(load_rgb(path))
            except Exception as e:  # noqa: BLE001 - name the record whatever the decoder raised
                raise RuntimeError(
                    f"{row['dataset']} record {row['index']} ({row['file']}): image {path} cannot be loaded "
                    f"({type(e).__name__}: {e}); fix or remove the image and resume with "
                    "--resume_from_checkpoint auto"
                ) from e
        return {
            "prompt": row["messages"],
            "images": images,
            **{k: row[k] for k in REWARD_COLUMNS},
        }

    def dataset(self) -> Any:
        """A ``datasets.Dataset`` of row numbers and reward columns whose rows turn into :meth:`item` when read
        (images decoded lazily, with the toolkit's image rules)."""
        import datasets

        columns = {"row": list(range(len(self.rows)))}
        for key in REWARD_COLUMNS:
            columns[key] = [r[key] for r in self.rows]
        table = datasets.Dataset.from_dict(columns)

        def materialise(batch: dict[str, list]) -> dict[str, list]:
            items = [self.item(i) for i in batch["row"]]
            return {key: [item[key] for item in items] for key in items[0]} if items else {}

        out = table.with_transform(materialise)
        out.report = self.report  # run_info.json and dataset_report.json read it, as for SFT
        return out


# ---------------------------------------------------------------------------------------------- rewards
def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or a conversation whose last message holds it."""
    if isinstance(completion, str):
        return completion
    content = completion[-1].get("content", "") if completion else ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def training_progress(state: Any) -> float:
    """0 at the first step, 1 at the last (``state`` is the Trainer's)."""
    if state is None or not getattr(state, "max_steps", 0):
        return 0.0
    return min(state.global_step / state.max_steps, 1.0)


def make_reward_functions(settings: RewardArguments) -> list:
    """``[answer, format]``: TRL reward functions (one float per completion) over the dataset's reward
    columns. ``answer`` applies the IoU threshold of the training progress (:meth:`RewardArguments.iou_range`)
    and logs it as ``iou_threshold``."""
    start, end = settings.iou_range()

    def answer(completions, task_type, reference, question, trainer_state=None, log_metric=None, **_):
        threshold = iou_threshold_at(training_progress(trainer_state), start, end)
        if log_metric is not None and settings.iou_schedule:
            log_metric("iou_threshold", threshold)
        return [
            answer_reward(t, completion_text(c), r, q, iou_threshold=threshold)
            for c, t, r, q in zip(completions, task_type, reference, question)
        ]

    def format(completions, task_type, question, **_):  # noqa: A001 - TRL logs it as rewards/format
        return [format_reward(t, completion_text(c), q) for c, t, q in zip(completions, task_type, question)]

    answer.__name__, format.__name__ = ANSWER, FORMAT
    return [answer, format]


# ---------------------------------------------------------------------------------------------- trainer
class FlareGRPOTrainer(QwenVLTrainerMixin, GRPOTrainer):
    """TRL's ``GRPOTrainer`` with the toolkit's per-group learning rates, checkpoint files and completion
    marker, the vision keep-alive and per-task-type rewards (``reward_task/<task type>`` = the weighted
    reward, ``answer_task/<task type>`` = the answer reward, means over the step's completions of that task
    type on every rank)."""

    def __init__(self, *args, vision_lr=None, merger_lr=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_qwenvl(vision_lr, merger_lr)

    # -- rewards per task type --------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        local = torch.tensor(
            [TASK_TYPES.index(x["task_type"]) for x in inputs], device=rewards.device, dtype=torch.long
        )
        tasks = self.accelerator.gather(local)
        weights = self.reward_weights.to(rewards.device)
        total = (rewards * weights.unsqueeze(0)).nansum(dim=1)
        answer = (
            rewards[:, self.reward_func_names.index(ANSWER)] if ANSWER in self.reward_func_names else None
        )
        for k, name in enumerate(TASK_TYPES):
            rows = tasks == k
            if bool(rows.any()):
                self._metrics[mode][f"reward_task/{name}"].append(total[rows].mean().item())
                if answer is not None:
                    self._metrics[mode][f"answer_task/{name}"].append(answer[rows].mean().item())
        return rewards

    # -- the vision keep-alive ----------------------------------------------------------------------------
    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        pixel_values=None,
        image_grid_thw=None,
        num_images=None,
        mm_token_type_ids=None,
        **kwargs,
    ):
        """TRL's log-probabilities, chunk by chunk; a chunk without an image gets the one-token dummy image
        after its last position (:meth:`_add_dummy_image`), so every rank runs the vision tower in every
        forward (ZeRO-3 gathers its parameters on all ranks together). Positions after the last real one
        change nothing before them: the dummy's 3 positions are cut from the results."""
        base = super()._get_per_token_logps_and_entropies
        extra = {k: v for k, v in kwargs.items() if v is not None}
        if not self.vision_keep_alive or extra or self._vision_tower(model) is None:
            return base(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size,
                compute_entropy,
                compute_aux_loss,
                pixel_values=pixel_values,
                image_grid_thw=image_grid_thw,
                num_images=num_images,
                mm_token_type_ids=mm_token_type_ids,
                **kwargs,
            )
        rows = input_ids.size(0)
        batch_size = batch_size or rows
        counts = list(num_images) if num_images is not None else [0] * rows
        patches = image_grid_thw.prod(dim=-1).tolist() if image_grid_thw is not None else []
        logps, entropies, aux = [], [], []
        image = patch = 0
        for start in range(0, rows, batch_size):
            end = min(start + batch_size, rows)
            n_images = sum(counts[start:end])
            ids, mask = input_ids[start:end], attention_mask[start:end]
            mm = mm_token_type_ids[start:end] if mm_token_type_ids is not None else None
            if n_images:
                n_patches = sum(patches[image : image + n_images])
                out = base(
                    model,
                    ids,
                    mask,
                    logits_to_keep,
                    end - start,
                    compute_entropy,
                    compute_aux_loss,
                    pixel_values=pixel_values[patch : patch + n_patches],
                    image_grid_thw=image_grid_thw[image : image + n_images],
                    num_images=counts[start:end],
                    mm_token_type_ids=mm,
                )
                image, patch = image + n_images, patch + n_patches
            else:
                out = self._keep_alive_logps(
                    model, ids, mask, logits_to_keep, compute_entropy, compute_aux_loss
                )
            logps.append(out[0])
            if compute_entropy:
                entropies.append(out[1])
            if compute_aux_loss:
                aux.append(out[2])
        return (
            torch.cat(logps, dim=0),
            torch.cat(entropies, dim=0) if compute_entropy else None,
            torch.stack(aux).mean() if compute_aux_loss else None,
        )

    def _vision_tower(self, model) -> Any:
        inner = self.accelerator.unwrap_model(model)
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        return getattr(getattr(inner, "model", inner), "visual", None)

    def _keep_alive_logps(self, model, ids, mask, logits_to_keep, compute_entropy, compute_aux_loss):
        inputs = {"input_ids": ids, "attention_mask": mask}
        self._add_dummy_image(model, inputs, ids)
        inner = self.accelerator.unwrap_model(model)
        config = (inner.get_base_model() if hasattr(inner, "get_base_model") else inner).config
        extended = inputs["input_ids"]
        # An image-less chunk: the dummy's placeholder is the only image token.
        mm = (extended == config.image_token_id).to(torch.int32)
        logps, entropies, aux = GRPOTrainer._get_per_token_logps_and_entropies(
            self,
            model,
            extended,
            inputs["attention_mask"],
            logits_to_keep + DUMMY_IMAGE_TOKENS,
            extended.size(0),
            compute_entropy,
            compute_aux_loss,
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            num_images=[1] + [0] * (extended.size(0) - 1),
            mm_token_type_ids=mm,
        )
        cut = slice(None, -DUMMY_IMAGE_TOKENS)
        return logps[:, cut], (entropies[:, cut] if entropies is not None else None), aux


# ----------------------------------------------------------------------------------------------- recipe
class GRPORecipe(TrainingRecipe):
    """GRPO on registered datasets: prompts instead of supervised samples, left padding, TRL's trainer with
    the toolkit's parts (:class:`FlareGRPOTrainer`)."""

    args: GRPOArguments

    def setup_processor(self) -> Any:
        data = self.args.data
        try:
            processor = load_training_processor(
                self.args.model.model_name_or_path, data.min_pixels, data.max_pixels
            )
        except ModelNotFoundError as e:
            raise RecipeError(str(e)) from e
        processor.tokenizer.padding_side = "left"  # see the module docstring
        return processor

    def setup_data(self) -> tuple[Any, Any, list[dict] | None]:
        train, _, records = super().setup_data()
        prompts = PromptSet(train)
        if len(prompts) == 0:
            raise RecipeError("no prompt left after the checks; see the report above")
        logger.info(
            "GRPO prompts: %d (%s)",
            len(prompts),
            ", ".join(f"{k} {v}" for k, v in sorted(prompts.report["task_types"].items())),
        )
        return prompts.dataset(), None, records

    def record_run(self) -> dict[str, Any]:
        info = super().record_run()
        rewards = self.args.rewards
        start, end = rewards.iou_range()
        info["grpo"] = {
            "sampling": self.args.training.sampling(),
            "rewards": {
                "weights": {ANSWER: rewards.answer_reward_weight, FORMAT: rewards.format_reward_weight},
                "iou_threshold": {"start": start, "end": end},
                "answer_by_task_type": reward_notes(),
            },
        }
        logger.info("GRPO sampling: %s", info["grpo"]["sampling"])
        return info

    def build_trainer(self) -> FlareGRPOTrainer:
        args = self.args
        training, rewards = args.training, args.rewards
        training.reward_weights = [rewards.answer_reward_weight, rewards.format_reward_weight]
        return FlareGRPOTrainer(
            model=self.model,
            reward_funcs=make_reward_functions(rewards),
            args=training,
            train_dataset=self.train_dataset,
            processing_class=self.processor,
            vision_lr=training.vision_tower_lr,
            merger_lr=training.mm_projector_lr,
        )
