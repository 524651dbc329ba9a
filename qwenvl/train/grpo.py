"""GRPO, the second training stage: reinforcement learning on the challenge's own metrics.

    recipe = GRPORecipe(parse_grpo_arguments(argv))
    recipe.setup()
    recipe.train()

Start from an SFT checkpoint: a model that never writes a valid answer earns reward 0 on every completion,
and a group whose rewards are all equal teaches GRPO nothing. Each training step samples
``--num_generations`` completions per prompt (TRL's ``GRPOTrainer``: HF ``generate``, or vLLM with
``--use_vllm True`` from the vLLM environment, colocated by default: :func:`rollout_engine_options`), scores
each with the task table's rewards (:mod:`qwenvl.flare.rewards`: ``answer`` = the challenge's metric on the
one sample, ``format`` = the answer is in its dataset's form, weighted by ``--answer_reward_weight`` /
``--format_reward_weight``) and moves the policy towards the completions that beat their group's mean, with a
KL term (``--beta``) to the starting model.

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

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from trl import GRPOTrainer

from qwenvl.compat import quiet_checkpointing_reads
from qwenvl.data.dataset import INVALID_RECORD, SupervisedDataset, log_report
from qwenvl.data.processing import record_to_messages
from qwenvl.flare.images import fit_to_budget, load_rgb
from qwenvl.flare.pixels import PIXELS_PER_TOKEN, VISUAL_TOKEN_SIDE, BudgetPlan, describe_plan
from qwenvl.flare.rewards import ANSWER, FORMAT, answer_reward, format_reward, iou_threshold_at, reward_notes
from qwenvl.flare.runfiles import read_run_info
from qwenvl.flare.schema import IMAGE_TAG
from qwenvl.flare.tasks import TASK_TYPES, normalize_task_type
from qwenvl.flare.vocabulary import AnswerVocabulary, record_dataset, training_vocabularies
from qwenvl.model import pixel_budget, set_pixel_limits
from qwenvl.train.grpo_arguments import GRPOArguments, RewardArguments
from qwenvl.train.recipe import RecipeError, TrainingRecipe
from qwenvl.train.trainer import QwenVLTrainerMixin

logger = logging.getLogger(__name__)

DUMMY_IMAGE_TOKENS = 3  # <|vision_start|><|image_pad|><|vision_end|> of the keep-alive image
# What each prompt carries besides its messages and images: what the rewards read, and where it came from.
REWARD_COLUMNS = ("reference", "task_type", "question", "dataset", "index", "vocabulary")


# ---------------------------------------------------------------------------------------------- prompts
@contextmanager
def processor_limits_open(processor: Any) -> Iterator[None]:
    """While active, the processor resizes no image that is already on its grid: its limits span one visual
    token to any size (images fitted by :func:`~qwenvl.flare.images.fit_to_budget` keep their size)."""
    saved = pixel_budget(processor)
    set_pixel_limits(processor, saved.factor * saved.factor, 1 << 40)
    try:
        yield
    finally:
        set_pixel_limits(processor, saved.min_pixels, saved.max_pixels)


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

    def __init__(self, checked: SupervisedDataset, factor: int = VISUAL_TOKEN_SIDE) -> None:
        self.factor = factor  # pixels per side of one visual token on the processor's grid
        self.rows: list[dict[str, Any]] = []
        report = checked.report
        # The answer vocabulary of each option-task dataset: rewards score answers written in it.
        self.vocabularies = training_vocabularies(sample.record for sample in checked.samples)
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
                vocabulary = self.vocabularies.get(record_dataset(record), {}).get(task_type)
                # ValueError: the reference is unparsable
                answer_reward(task_type, reference, reference, question, vocabulary=vocabulary)
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
                    "budget": sample.budget,
                    "reference": reference,
                    "task_type": task_type,
                    "question": question,
                    "dataset": str(src["dataset"]),
                    "index": int(src["index"]),
                    "file": str(src["file"]),
                    "vocabulary": json.dumps(vocabulary.as_record()) if vocabulary else "",
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
        """Row ``i`` as TRL reads it: ``prompt`` (messages), ``images`` (8-bit RGB, in tag order, each already
        at the size its record's image budget gives it: :func:`~qwenvl.flare.images.fit_to_budget`) and the
        reward columns. An image that no longer loads stops the run with the record named (the images
        were checked before training, so it was changed or deleted since)."""
        row = self.rows[i]
        budget = row["budget"]
        images = []
        for path in row["image_paths"]:
            try:
                image = load_rgb(path)
                if budget is not None:
                    image = fit_to_budget(image, budget.min_pixels, budget.max_pixels, self.factor)
                images.append(image)
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
        out.answer_vocabularies = self.vocabularies  # run_info.json's answer_vocabulary
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


def row_vocabulary(text: str) -> AnswerVocabulary | None:
    """A prompt row's ``vocabulary`` column (JSON, ``""`` for none) as an :class:`AnswerVocabulary`."""
    return AnswerVocabulary.from_record(json.loads(text)) if text else None


def make_reward_functions(settings: RewardArguments) -> list:
    """``[answer, format]``: TRL reward functions (one float per completion) over the dataset's reward
    columns. ``answer`` applies the IoU threshold of the training progress (:meth:`RewardArguments.iou_range`)
    and logs it as ``iou_threshold``."""
    start, end = settings.iou_range()

    def answer(
        completions, task_type, reference, question, vocabulary=None, trainer_state=None, log_metric=None, **_
    ):
        threshold = iou_threshold_at(training_progress(trainer_state), start, end)
        if log_metric is not None and settings.iou_schedule:
            log_metric("iou_threshold", threshold)
        vocabularies = vocabulary or [""] * len(completions)
        return [
            answer_reward(t, completion_text(c), r, q, iou_threshold=threshold, vocabulary=row_vocabulary(v))
            for c, t, r, q, v in zip(completions, task_type, reference, question, vocabularies)
        ]

    def format(completions, task_type, question, vocabulary=None, **_):  # noqa: A001 - TRL logs it as rewards/format
        vocabularies = vocabulary or [""] * len(completions)
        return [
            format_reward(t, completion_text(c), q, row_vocabulary(v))
            for c, t, q, v in zip(completions, task_type, question, vocabularies)
        ]

    answer.__name__, format.__name__ = ANSWER, FORMAT
    return [answer, format]


# ------------------------------------------------------------------------------------------ vLLM rollouts
def rollout_engine_options(plan: BudgetPlan, device: str) -> dict[str, Any]:
    """The ``vllm.LLM`` keywords TRL's colocated engine needs beyond its own for Qwen3-VL image prompts. TRL
    hands vLLM the prompt ids the processor made (every image's visual tokens already expanded, the images
    fitted to their records' budgets: :meth:`PromptSet.item`), so vLLM's processor must not resize an image
    again, or its token count no longer matches the prompt's: its limits span one visual token to the plan's
    largest budget (which also sizes vLLM's memory profile). Also: up to :data:`MAX_IMAGES_PER_PROMPT` images
    and no video per prompt; eager mode on the CPU (vLLM's CPU build needs it)."""
    from qwenvl.eval.vllm_backend import MAX_IMAGES_PER_PROMPT, largest_budget

    largest = largest_budget(plan)
    options: dict[str, Any] = {
        "mm_processor_kwargs": {
            "size": {"shortest_edge": PIXELS_PER_TOKEN, "longest_edge": largest.max_pixels}
        },
        "limit_mm_per_prompt": {"image": MAX_IMAGES_PER_PROMPT, "video": 0},
    }
    if not str(device).startswith("cuda"):
        options["enforce_eager"] = True
    return options


@contextmanager
def vllm_engine_options(options: dict[str, Any]) -> Iterator[None]:
    """While active, the vLLM engine TRL builds for colocated rollouts gets ``options`` besides TRL's own
    keywords (TRL offers no hook for them)."""
    if not options:
        yield
        return
    import trl.generation.vllm_generation as generation

    build = generation.LLM

    def with_options(*args: Any, **kwargs: Any) -> Any:
        return build(*args, **{**kwargs, **options})

    generation.LLM = with_options
    try:
        yield
    finally:
        generation.LLM = build


def collapse_image_runs(ids: Sequence[int], image_token_id: int) -> list[int]:
    """``ids`` with every run of image tokens cut to one: the form vLLM expands itself (it replaces each single
    image token by the image's visual tokens, so an already expanded run would be counted twice)."""
    out: list[int] = []
    for token in ids:
        if token != image_token_id or not out or out[-1] != image_token_id:
            out.append(token)
    return out


def with_collapsed_image_runs(generate: Callable[..., Any], image_token_id: int) -> Callable[..., Any]:
    """TRL's colocated ``VLLMGeneration.generate`` fed the prompts with their image-token runs collapsed
    (:func:`collapse_image_runs`): TRL hands vLLM the processor's prompt ids, each image already expanded to
    its visual tokens, and vLLM would expand every one of those tokens again."""

    def generate_collapsed(prompts: list, images: Any = None, *args: Any, **kwargs: Any) -> Any:
        if images is not None:
            prompts = [collapse_image_runs(p, image_token_id) for p in prompts]
        return generate(prompts, images, *args, **kwargs)

    return generate_collapsed


# ---------------------------------------------------------------------------------------------- trainer
class FlareGRPOTrainer(QwenVLTrainerMixin, GRPOTrainer):
    """TRL's ``GRPOTrainer`` with the toolkit's per-group learning rates, checkpoint files and completion
    marker, the vision keep-alive and per-task-type rewards (``reward_task/<task type>`` = the weighted
    reward, ``answer_task/<task type>`` = the answer reward, means over the step's completions of that task
    type on every rank)."""

    def __init__(self, *args, vision_lr=None, merger_lr=None, rollout_options=None, **kwargs):
        with vllm_engine_options(rollout_options or {}):  # colocated vLLM rollouts: rollout_engine_options
            super().__init__(*args, **kwargs)
        if self.use_vllm and self.vllm_mode == "colocate":
            image_token = self.processing_class.tokenizer.convert_tokens_to_ids("<|image_pad|>")
            generation = self.vllm_generation
            generation.generate = with_collapsed_image_runs(generation.generate, image_token)
        self._init_qwenvl(vision_lr, merger_lr)

    # -- per-record image budgets ---------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        """TRL's rollout step, with the processor's limits opened wide: the images arrive fitted to their
        records' budgets (:meth:`PromptSet.item`), and TRL's processor calls (the prompts' tokens, then the
        forward's pixels) would otherwise resize them all to one budget again. TRL's reads of the model's
        deprecated checkpointing flag there are kept quiet (:func:`qwenvl.compat.quiet_checkpointing_reads`)."""
        with processor_limits_open(self.processing_class), quiet_checkpointing_reads():
            return super()._generate_and_score_completions(inputs)

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

    def resolve_pixel_plan(self) -> BudgetPlan:
        """The SFT checkpoint's image budgets: each dataset is GRPO-trained with the budget it was finetuned
        with (``NAME@TOKENS`` and ``--min_pixels`` / ``--max_pixels`` still win: :meth:`BudgetPlan.inherit`)."""
        plan = self.args.data.image_plan()
        trained = BudgetPlan.from_run_info(read_run_info(self.args.model.model_name_or_path))
        if trained is not None:
            plan = plan.inherit(trained)
        logger.info("Image budgets (%s): %s", plan.policy, describe_plan(plan))
        return plan

    def setup_processor(self) -> Any:
        processor = super().setup_processor()
        processor.tokenizer.padding_side = "left"  # see the module docstring
        return processor

    def setup_data(self) -> tuple[Any, Any, list[dict] | None]:
        train, _, records = super().setup_data()
        prompts = PromptSet(train, pixel_budget(self.processor).factor)
        if len(prompts) == 0:
            raise RecipeError("no prompt left after the checks; see the report above")
        logger.info(
            "GRPO prompts: %d (%s)",
            len(prompts),
            ", ".join(f"{k} {v}" for k, v in sorted(prompts.report["task_types"].items())),
        )
        return prompts.dataset(), None, records

    def answer_vocabularies(self) -> dict[str, dict[str, AnswerVocabulary]]:
        return self.train_dataset.answer_vocabularies  # the prompts' (PromptSet.dataset)

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
        colocated = training.use_vllm and training.vllm_mode == "colocate"
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if colocated:
            from qwenvl.eval.vllm_backend import prepare_environment

            prepare_environment(device)  # vLLM's console and CPU defaults, as for evaluation
        return FlareGRPOTrainer(
            model=self.model,
            reward_funcs=make_reward_functions(rewards),
            args=training,
            train_dataset=self.train_dataset,
            processing_class=self.processor,
            vision_lr=training.vision_tower_lr,
            merger_lr=training.mm_projector_lr,
            rollout_options=rollout_engine_options(self.pixel_plan, device) if colocated else None,
        )
