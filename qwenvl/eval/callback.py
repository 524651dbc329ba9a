"""Optional generation metrics during training: every N optimizer steps, answer a small fixed validation
subset with greedy generation and log the FLARE metrics (``gen_<dataset>_<metric>``). Off unless added.

Wiring (in ``train_qwen.py``, after the Trainer exists)::

    if data_args.generation_eval_steps > 0:
        from qwenvl.eval.callback import GenerationEvalCallback, generation_eval_records

        records = generation_eval_records(
            data_args.dataset_use, data_args.eval_dataset_use, data_args.generation_eval_samples
        )
        trainer.add_callback(
            GenerationEvalCallback(records, processor, data_args.generation_eval_steps, log_fn=trainer.log)
        )

Cost. Generation is sequential: one forward per new token. With DeepSpeed ZeRO-3 the parameters are sharded,
so every forward gathers every layer's weights, and every rank must take part in every forward: the callback
therefore runs on all ranks at once, each rank answering its share of the subset (padded to equal batch counts),
with ``synced_gpus`` so ranks that finish early keep stepping. With parameter offload to CPU each gathered
forward also copies the whole model over PCIe (about 8 GB for the 4B model in bf16): budget on the order of a
second per generated token per batch. Keep the subset small (a few records per dataset), classification-heavy,
and ``max_new_tokens`` short; detection and chromosome instances (budgets of hundreds to about 1,700 tokens)
dominate the cost. Answers are format-constrained like evaluation's (``free_decoding=False``), so a metric
never drops because an early checkpoint wrote an unparsable answer, and a constrained answer ends as soon as
its pattern is complete.

``backend="vllm"`` (``--generation_eval_backend vllm``, from the vLLM environment) answers with a vLLM engine
built once from the run's starting checkpoint in the training process, into which the current weights are
loaded before each evaluation (one process without ZeRO-3 or LoRA: the weights must be whole and named as in
the checkpoint). The engine takes ``GENERATION_EVAL_VLLM_MEMORY`` of the GPU next to training.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from qwenvl.eval.backends import BACKENDS, HF, VLLM
from qwenvl.eval.generate import BatchGenerator, Generation
from qwenvl.eval.predictions import score_generations
from qwenvl.flare.runfiles import GENERATION_EVAL_DIR, GENERATION_PREFIX
from qwenvl.flare.schema import describe_records
from qwenvl.flare.tasks import TASKS

log = logging.getLogger(__name__)

PREFIX = GENERATION_PREFIX  # gen_<dataset>_<metric>, gen_all_<task>_<metric>
GENERATION_EVAL_VLLM_MEMORY = 0.2  # share of the GPU the vLLM engine of --generation_eval_backend vllm takes


# ---------------------------------------------------------------------------------------------- records
def _val_twin(name: str) -> str | None:
    """``flare_retino%50`` -> ``flare_retino_val`` (the registered labelled validation twin), else ``None``."""
    from qwenvl import data as registry

    base = name.split("%", 1)[0].strip()
    twin = f"{base}_val"
    return twin if registry.data_dict.get(twin, {}).get("labelled") else None


def generation_eval_records(
    dataset_use: str, eval_dataset_use: str = "", n_per_dataset: int = 4
) -> list[dict]:
    """The fixed subset: the first ``n_per_dataset`` labelled records of each dataset of ``eval_dataset_use``
    (its ``%NN`` rates are ignored), or when that is empty, of the ``_val`` twin of each training dataset of
    ``dataset_use`` that is registered. Raises ``ValueError`` when nothing labelled is found."""
    from qwenvl.data import load_annotations, parse_dataset_use, resolve_datasets

    if n_per_dataset < 1:
        raise ValueError(f"generation_eval_samples must be at least 1, got {n_per_dataset}")
    if eval_dataset_use:
        names = [use.name for use in parse_dataset_use(eval_dataset_use)]
    else:
        names = [t for t in (_val_twin(use.name) for use in parse_dataset_use(dataset_use)) if t]
    if not names:
        raise ValueError(
            "generation metrics need labelled validation data: convert the val split of the training datasets "
            "or pass --eval_dataset_use flare_<name>_val,..."
        )
    records: list[dict] = []
    for spec in resolve_datasets(",".join(names), require_labels=True):
        labelled = [
            r for r in load_annotations(spec, seed=0) if (r.get("meta") or {}).get("has_answer", True)
        ]
        records.extend(labelled[:n_per_dataset])
    return records


# ------------------------------------------------------------------------------------------ distribution
def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_plan(
    records: Sequence[dict], rank: int, world: int, budget_of: Callable[[dict], int]
) -> list[tuple[int, bool]]:
    """``(record index to feed, keep)`` pairs for this rank: records grouped by token budget (``budget_of``,
    the generator's :meth:`~qwenvl.eval.generate.BatchGenerator.budget_for`) in a fixed order, each group dealt
    round-robin and padded with its first record (``keep=False``) to the same length on every rank, so all
    ranks make the same number of ``generate`` calls (required under ZeRO-3)."""
    groups: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(budget_of(record), []).append(i)
    plan: list[tuple[int, bool]] = []
    for budget in sorted(groups):
        members = groups[budget]
        mine = members[rank::world]
        plan += [(i, True) for i in mine]
        plan += [(members[0], False)] * (math.ceil(len(members) / world) - len(mine))
    return plan


def generate_distributed(generator: BatchGenerator, records: Sequence[dict]) -> list[Generation]:
    """Answer ``records`` with every rank taking its share; every rank gets every answer, in input order."""
    rank, world = _world()
    if world == 1:
        return list(generator(records))
    import torch.distributed as dist

    plan = shard_plan(records, rank, world, generator.budget_for)
    answers = generator([records[i] for i, _ in plan])
    mine = [(i, g) for (i, keep), g in zip(plan, answers) if keep]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    out: dict[int, Generation] = {i: g for part in gathered for i, g in part}
    return [out[i] for i in range(len(records))]


# --------------------------------------------------------------------------------------------- callback
def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", name)


def flatten_metrics(metrics: dict, prefix: str = PREFIX) -> dict[str, float]:
    """``{"gen_<dataset>_<main metric>": value, ...}`` plus ``gen_<task>_<main metric>`` per task type and
    ``gen_n_unparsable``; ``None`` values (no parsable number at all) are left out."""
    flat: dict[str, float] = {}
    for section in ("by_task", "by_dataset"):
        for name, group in metrics.get(section, {}).items():
            task = name if section == "by_task" else group.get("task_type")
            if task not in TASKS:
                continue
            metric = TASKS[task].main_metric
            value = group.get(metric)
            if isinstance(value, (int, float)):
                scope = f"all_{task}" if section == "by_task" else name
                flat[f"{prefix}{_safe(scope)}_{metric}"] = float(value)
    flat[f"{prefix}n_unparsable"] = float(
        sum(g.get("n_unparsable", 0) for g in metrics.get("by_task", {}).values())
    )
    return flat


class GenerationEvalCallback(TrainerCallback):
    """Every ``eval_steps`` optimizer steps: generate on ``records`` (a fixed labelled subset), score with the
    FLARE metrics and pass ``gen_*`` values to ``log_fn`` (``trainer.log``: they reach the console, the run's
    train_log.jsonl, TensorBoard / W&B). Rank 0 also writes ``<output_dir>/generation_eval/step-N.json``.
    ``record_set`` (:func:`~qwenvl.flare.schema.describe_records`) says what the metrics are on: the run's log
    lines and step-N.json name it (a small converted subset, the toolkit's scores, never the headline of an
    evaluation on the organisers' record set).
    Answers are format-constrained unless ``free_decoding``. Must run on every rank (ZeRO-3); see the module
    docstring for the cost. ``pixel_plan``: the run's image budgets, so each record is seen as it is trained.
    ``backend``: ``hf`` (the training model's ``generate``) or ``vllm`` (an engine built from ``model_path``,
    the run's starting checkpoint, with the current weights loaded before each evaluation)."""

    def __init__(
        self,
        records: Sequence[dict],
        processor: Any,
        eval_steps: int,
        log_fn: Callable[[dict[str, float]], Any] | None = None,
        batch_size: int = 4,
        max_new_tokens: int | None = None,
        free_decoding: bool = False,
        pixel_plan: Any = None,
        backend: str = HF,
        model_path: str | None = None,
    ) -> None:
        if eval_steps < 1:
            raise ValueError(f"eval_steps must be at least 1, got {eval_steps}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown generation backend {backend!r}; choose hf or vllm")
        if backend == VLLM and not model_path:
            raise ValueError("the vllm generation backend needs model_path (the run's starting checkpoint)")
        if not records:
            raise ValueError("GenerationEvalCallback needs at least one labelled record")
        self.records = list(records)
        self.record_set = describe_records(self.records)  # what the metrics are on, for the run's log
        self.processor = processor
        self.eval_steps = eval_steps
        self.log_fn = log_fn
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.free_decoding = free_decoding
        self.pixel_plan = pixel_plan  # the run's image budgets (None: the processor's limits)
        self.backend = backend
        self.model_path = model_path
        self.engine: Any = None  # the vLLM engine (backend vllm), built at the first evaluation
        self.history: list[dict[str, float]] = []

    def generator(self, model: Any) -> Any:
        """The generator of one evaluation: a :class:`BatchGenerator` on ``model``, or (backend ``vllm``) the
        engine with ``model``'s current weights loaded."""
        if self.backend == HF:
            return BatchGenerator(
                model,
                self.processor,
                self.batch_size,
                self.max_new_tokens,
                progress=False,
                free_decoding=self.free_decoding,
                pixel_plan=self.pixel_plan,
            )
        from qwenvl.eval import vllm_backend as vb

        if _world()[1] > 1:
            raise RuntimeError(
                "--generation_eval_backend vllm runs in one training process; with several, use the hf backend"
            )
        device = "cuda" if next(model.parameters()).is_cuda else "cpu"
        problem = vb.weight_sync_problem(device)
        if problem:
            raise RuntimeError(f"--generation_eval_backend vllm: {problem}")
        if self.engine is None:
            settings = vb.EngineSettings(
                max_num_seqs=max(self.batch_size, 8), gpu_memory_utilization=GENERATION_EVAL_VLLM_MEMORY
            )
            self.engine = vb.load_engine(self.model_path, device=device, settings=settings, in_process=True)
        vb.load_weights(self.engine.llm, model)
        return vb.VLLMGenerator(
            self.engine.llm,
            self.processor,
            self.engine.stop_ids,
            self.max_new_tokens,
            progress=False,
            free_decoding=self.free_decoding,
            pixel_plan=self.pixel_plan,
        )

    def evaluate(self, model: Any, step: int, output_dir: str | None = None) -> dict[str, float]:
        """Generate, score and return the flat ``gen_*`` metrics (also kept in ``history``)."""
        generator = self.generator(model)
        t0 = time.time()
        generations = generate_distributed(generator, self.records)
        seconds = time.time() - t0
        scored = score_generations(self.records, generations)
        flat = flatten_metrics(scored.metrics or {})
        flat[f"{PREFIX}seconds"] = round(seconds, 2)
        self.history.append({"step": step, **flat})
        rank, _ = _world()
        if output_dir and rank == 0:
            folder = Path(output_dir) / GENERATION_EVAL_DIR
            folder.mkdir(parents=True, exist_ok=True)
            detail = {
                "step": step,
                "records": self.record_set,
                "metrics": scored.metrics,
                "outputs": [
                    {"dataset": p.dataset, "task_type": p.task_type, "output": p.text, "parsed": p.parsed}
                    for p in scored.outputs
                ],
            }
            (folder / f"step-{step}.json").write_text(json.dumps(detail, indent=2, ensure_ascii=False))
        return flat

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step == 0 or state.global_step % self.eval_steps:
            return control
        flat = self.evaluate(model, state.global_step, getattr(args, "output_dir", None))
        log.info("generation metrics at step %d on %s: %s", state.global_step, self.record_set["text"], flat)
        if self.log_fn is not None:
            should_log = control.should_log
            self.log_fn(flat)  # trainer.log resets control.should_log: keep this step's loss line
            control.should_log = should_log
        return control
