"""One training recipe: processor, data, model, collator and trainer, built once, in named steps.

    recipe = SFTRecipe(parse_arguments(argv))
    recipe.setup()   # every mistake surfaces here, in seconds: RecipeError says what to fix
    recipe.train()   # resume if asked, train, save the final model beside its run_info.json

:meth:`TrainingRecipe.setup` runs the steps in an order that puts the cheap checks before the expensive loads:

1. ``setup_processor``: the model's processor with the run's pixel limits;
2. ``setup_data``: the training (and eval) sets resolved in the registry, every record checked and
   length-filtered (never truncated), plus the generation-eval subset;
3. ``record_run``: ``run_info.json``'s content (resolved arguments, seed, dataset mix, versions, git commit)
   and ``dataset_report.json`` in the output folder, before the model loads;
4. ``setup_model``: the weights in the right dtype, the KV cache off, freezing, input grads for gradient
   checkpointing, LoRA;
5. ``build_trainer``: the training mode's own step (SFT: the collator and :class:`QwenVLTrainer`);
6. ``setup_callbacks``: self-contained checkpoints, a clean stop on SIGTERM, the live run record and the
   optional generation eval.

The methods only read the argument groups; the work is done by the module functions
:func:`load_training_processor`, :func:`load_training_datasets`, :func:`training_dtype`,
:func:`prepare_model_for_training`, :func:`build_collator` and :func:`build_sft_trainer`, which the benchmark
(``qwenvl/bench``) and the data check (``qwenvl/tools/data_check``) call with their own settings.

A second training mode (e.g. GRPO on TRL's ``GRPOTrainer``, an HF Trainer subclass) is a subclass of
:class:`TrainingRecipe` with

- its arguments: a :class:`~qwenvl.train.arguments.RecipeArguments` subclass whose ``training`` group is its
  trainer's config (a ``transformers.TrainingArguments`` subclass, as TRL's configs are) plus its own groups,
  parsed with :func:`~qwenvl.train.arguments.parse_groups` and its own check;
- ``build_trainer()``: its trainer from ``self.model``, ``self.processor`` and ``self.train_dataset``;
- where it needs to, its own ``setup_data()`` (prompts rather than supervised samples) or
  ``setup_processor()`` (GRPO pads prompts on the left).

Processor loading, model loading, freezing, LoRA, the run record, the callbacks, resuming and the final save
are inherited unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import transformers

from qwenvl.bench.projection import cost_lines, mix_cost
from qwenvl.compat import recover_interrupted_builds, zero3_on_gloo_problem
from qwenvl.data.collator import PackedCollator, PaddedCollator
from qwenvl.data.dataset import SupervisedDataset, build_supervised_dataset
from qwenvl.flare.pixels import BudgetPlan, describe_plan
from qwenvl.flare.runfiles import CHECKPOINT_COMPLETE, DATASET_REPORT, newest_complete_checkpoint
from qwenvl.flare.schema import describe_records
from qwenvl.flare.vocabulary import AnswerVocabulary, training_vocabularies, vocabulary_table
from qwenvl.model import ModelNotFoundError, load_model, load_processor
from qwenvl.train.arguments import RecipeArguments, SFTArguments, TrainingArguments
from qwenvl.train.callbacks import (
    CheckpointFilesCallback,
    GracefulStopCallback,
    RunRecordCallback,
    git_commit,
    versions,
)
from qwenvl.train.lora import LoraSettings, apply_lora
from qwenvl.train.params import apply_freeze, parameter_table
from qwenvl.train.trainer import QwenVLTrainer

logger = logging.getLogger(__name__)


class RecipeError(ValueError):
    """A setting or an input that stops the run before training starts; the message says what to fix."""


# ------------------------------------------------------------------------------------------ launching
# What torchrun sets for each worker, about its place among the workers.
_TORCHRUN_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")


def init_cpu_distributed(argv: list[str]) -> list[str]:
    """Several processes without a GPU (the demo, CI), with DeepSpeed or plain DDP: set up the gloo process
    group and accelerate's (DeepSpeed or multi-CPU) state before TrainingArguments exist, and tell
    TrainingArguments to use that state. Call it first, before the
    arguments are parsed; returns ``argv`` with the ``--accelerator_config`` that says so.

    Left alone, accelerate sees no GPU backend and reports a world size of 1, so DeepSpeed's batch-size check
    fails with 2 processes and ZeRO-3 partitioned loading would not see every rank."""
    import torch

    on_deepspeed = any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in argv)
    if torch.cuda.is_available() or "WORLD_SIZE" not in os.environ:
        return argv
    if not on_deepspeed and int(os.environ["WORLD_SIZE"]) < 2:
        # One process under torchrun: with torchrun's rank variables accelerate opens a one-process gloo group
        # that the Trainer then does not use, and transformers warns "process group is initialized, but
        # parallel_mode != ParallelMode.DISTRIBUTED". Without them the run is the plain single process it is.
        for name in _TORCHRUN_RANK_VARIABLES:
            os.environ.pop(name, None)
        return argv
    if any(a.startswith("--accelerator_config") for a in argv):
        return argv  # the user configures accelerate themselves
    from accelerate import PartialState

    if on_deepspeed:
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        PartialState(backend="gloo")
    else:
        # Plain DDP on CPU: without this, accelerate leaves the process group outside the Trainer's
        # parallel mode and every process trains alone on all the data.
        PartialState(cpu=True, backend="gloo")
    config = Path(tempfile.gettempdir()) / f"qwenvl_accelerate_configured_state_{os.getpid()}.json"
    config.write_text(json.dumps({"use_configured_state": True}))
    return [*argv, "--accelerator_config", str(config)]


def run_recipe(
    argv: list[str] | None,
    mode: Callable[[], tuple[Callable[[list[str]], RecipeArguments], type[TrainingRecipe]]],
) -> int:
    """What every training entry point (``train_qwen.py``, ``grpo_qwen.py``) does: the CPU process group when
    several processes run without a GPU; ``mode()``, which imports the training mode and returns its argument
    parser and recipe class (after the process group, as before); the arguments parsed; logging (INFO on the
    main process); the recipe's set-up and training. Exit status 2 with ``error: ...`` on stderr for anything
    wrong before training starts (a bad flag, a setting the Trainer's config or the recipe rejects)."""
    import sys

    import torch.distributed as dist

    recover_interrupted_builds()  # before DeepSpeed builds its ops (the CPU process group builds one)
    argv = init_cpu_distributed(sys.argv[1:] if argv is None else argv)
    parse, recipe_class = mode()
    try:
        args = parse(argv)
    except ValueError as e:  # ArgumentError and the Trainer configs' own checks
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if args.training.process_index == 0 else logging.WARNING,
    )
    recipe = recipe_class(args)
    try:
        recipe.setup()
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    recipe.train()
    if dist.is_available() and dist.is_initialized():
        # Torn down here, not left to the interpreter's exit (see exit_process). The barrier first: no rank
        # tears its group down while another is still finishing (seen on a loaded 2-core machine).
        dist.barrier()
        dist.destroy_process_group()
    return 0


def exit_process(status: int) -> NoReturn:
    """How a training entry point run as a script ends. One of several processes whose run finished (status 0)
    runs Python's at-exit functions (an experiment tracker ends its run there), flushes its logs and streams,
    and leaves without the interpreter's finalization: there, as gloo's and DeepSpeed's C++ objects are
    destroyed, a rank of a finished run sometimes aborted ("terminate called without an active exception",
    exit status -6, in CI) and torchrun reported the whole run as failed, which stops a job script before its
    evaluation. Everything else ends as usual, with ``status``."""
    import atexit
    import sys

    if status == 0 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(status)


def resolve_resume(training: transformers.TrainingArguments) -> str | None:
    """The checkpoint to resume from: ``--resume_from_checkpoint`` as given, or with ``auto`` the newest
    complete ``checkpoint-N`` of ``--output_dir`` (one with its completion marker, written last; newer
    incomplete ones, e.g. from a process killed mid-save, are skipped and named in the log). ``None``, a fresh
    start, when there is none yet."""
    if training.resume_from_checkpoint != "auto":
        if training.resume_from_checkpoint:
            logger.info("Resuming from %s", training.resume_from_checkpoint)
        return training.resume_from_checkpoint
    output_dir = Path(training.output_dir)
    newest, skipped = newest_complete_checkpoint(output_dir)
    if newest is not None:
        if skipped:
            logger.warning(
                "--resume_from_checkpoint auto: skipped incomplete checkpoint(s) without %s: %s",
                CHECKPOINT_COMPLETE,
                ", ".join(str(p) for p in skipped),
            )
        logger.info("Resuming from %s (the newest complete checkpoint in %s)", newest, output_dir)
        return str(newest)
    if skipped:
        logger.warning(
            "--resume_from_checkpoint auto: no complete checkpoint in %s (none has %s: %s); starting from "
            "scratch",
            output_dir,
            CHECKPOINT_COMPLETE,
            ", ".join(str(p) for p in skipped),
        )
    else:
        logger.info(
            "--resume_from_checkpoint auto: no checkpoint in %s yet, starting from scratch", output_dir
        )
    return None


# ---------------------------------------------------------------------------------------------- steps
def load_training_processor(model_path: str, min_pixels: int, max_pixels: int, **hub_kwargs: Any) -> Any:
    """The processor of ``model_path`` with the run's image pixel limits. Every checkpoint saves it, so the
    trained limits travel with the model. ``ModelNotFoundError`` for a hub id that is not cached offline or a
    folder that does not exist; ``hub_kwargs`` go to ``from_pretrained`` (e.g. ``local_files_only``)."""
    return load_processor(model_path, min_pixels=min_pixels, max_pixels=max_pixels, **hub_kwargs)


def load_training_datasets(
    processor: Any,
    dataset_use: str,
    model_max_length: int,
    seed: int,
    eval_dataset_use: str = "",
    pixel_plan: BudgetPlan | None = None,
    mixture_temperature: float = 1.0,
) -> tuple[SupervisedDataset, SupervisedDataset | None]:
    """``(train, eval)``: the labelled records of ``dataset_use`` (``"name%NN,..."``, the ``%NN`` draw seeded by
    ``seed``), each checked and its exact token length, with its images within its dataset's budget of
    ``pixel_plan`` (``None``: the processor's limits), compared with ``model_max_length`` (over-long ones are
    dropped and reported, never truncated); ``eval`` likewise from ``eval_dataset_use``, ``None`` when it is
    empty. The training draw follows ``mixture_temperature`` and ``+balanced`` (:mod:`qwenvl.data.mixture`).
    ``KeyError`` names an unknown dataset, ``ValueError`` an unreadable or answer-less file, a dataset left
    without draws or a ``+balanced`` dataset without classes."""
    train = build_supervised_dataset(
        dataset_use,
        processor,
        model_max_length,
        seed=seed,
        require_labels=True,
        pixel_plan=pixel_plan,
        mixture_temperature=mixture_temperature,
    )
    evaluation = (
        build_supervised_dataset(
            eval_dataset_use,
            processor,
            model_max_length,
            seed=seed,
            require_labels=True,
            pixel_plan=pixel_plan,
        )
        if eval_dataset_use
        else None
    )
    return train, evaluation


def over_length_datasets(dataset: SupervisedDataset) -> list[str]:
    """Why a dataset lost every record to the length limit, one line per such dataset with the fix (empty:
    none did). A whole dataset dropped means its image budget cannot fit ``model_max_length`` for any record:
    an error before the model loads, not hours of training without it."""
    out = []
    for name, d in dataset.report["datasets"].items():
        if d["drawn"] and not d["kept"] and d.get("over_length") == d["drawn"]:
            budget = d.get("image_budget")
            shortest = d["length"]["median"] if "length" in d else None
            out.append(
                f"{name}: every one of its {d['drawn']} records is longer than --model_max_length "
                f"{dataset.model_max_length} (median {shortest} tokens"
                + (f" with images of up to {budget['max_tokens']} visual tokens" if budget else "")
                + f"): raise --model_max_length to {d['length_to_keep_all']} (MAX_LENGTH) or give the dataset a "
                f"smaller image budget ({name}@TOKENS in --dataset_use)"
            )
    return out


def training_dtype(training: transformers.TrainingArguments, lora: bool) -> str:
    """The dtype the weights load in.

    DeepSpeed keeps fp32 master weights itself, and LoRA's trained weights stay fp32 inside peft, so those load
    in half precision (``--bf16`` / ``--fp16``). A plain full finetune loads fp32 and lets ``--bf16`` autocast
    the compute: bf16 weights updated in place would lose updates around 1e-5 to rounding."""
    half = "bfloat16" if training.bf16 else ("float16" if training.fp16 else "float32")
    return half if (training.deepspeed or lora) else "float32"


def prepare_model_for_training(
    model: Any,
    *,
    tune_vision: bool,
    tune_merger: bool,
    tune_llm: bool,
    lora: LoraSettings | None,
    gradient_checkpointing: bool,
) -> Any:
    """Make a loaded (or freshly built) model ready for the Trainer, in this order:

    1. the KV cache off (training never reuses it, and packed rows need it off to keep samples apart);
    2. freezing: ``requires_grad`` per parameter from the three tune flags (:func:`~qwenvl.train.params.apply_freeze`);
    3. with gradient checkpointing and frozen input embeddings (LoRA, or a frozen LLM), embeddings outputs
       that require grad: a checkpointed layer needs an input that does, or its parameters get no gradient;
    4. with ``lora``, PEFT adapters (:func:`~qwenvl.train.lora.apply_lora`): the groups the tune flags enable
       besides the adapters train fully.

    Returns the model to train: ``model`` itself, or its PEFT wrapper under LoRA."""
    model.config.use_cache = False
    if hasattr(model.config, "text_config"):
        model.config.text_config.use_cache = False
    apply_freeze(model, tune_vision, tune_merger, tune_llm)
    if gradient_checkpointing and (lora is not None or not tune_llm):
        model.enable_input_require_grads()
    if lora is not None:
        model = apply_lora(model, lora, tune_vision, tune_merger)
    return model


def build_collator(pad_token_id: int, packing: bool) -> PaddedCollator | PackedCollator:
    """The batch builder: whole samples packed into one row (``packing``) or right-padded rows."""
    return (PackedCollator if packing else PaddedCollator)(pad_token_id=pad_token_id)


def build_sft_trainer(
    model: Any,
    training: TrainingArguments,
    processor: Any,
    train_dataset: SupervisedDataset,
    collator: PaddedCollator | PackedCollator,
    eval_dataset: SupervisedDataset | None = None,
    packing_max_tokens: int | None = None,
) -> QwenVLTrainer:
    """The supervised trainer: per-group learning rates (``training.vision_tower_lr`` / ``mm_projector_lr``),
    per-token loss, and with ``packing_max_tokens`` packs of whole samples
    of at most that many tokens (``collator`` must then be a :class:`PackedCollator`)."""
    return QwenVLTrainer(
        model=model,
        args=training,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
        vision_lr=training.vision_tower_lr,
        merger_lr=training.mm_projector_lr,
        packing_max_tokens=packing_max_tokens,
    )


# --------------------------------------------------------------------------------------------- recipes
class TrainingRecipe:
    """The steps every training mode shares; a mode supplies :meth:`build_trainer` (see the module docstring).

    After :meth:`setup` the attributes hold what each step built: ``processor``, ``train_dataset``,
    ``eval_dataset``, ``generation_records``, ``run_info``, ``model`` and ``trainer``."""

    def __init__(self, args: RecipeArguments) -> None:
        self.args = args
        self.processor: Any = None
        self.train_dataset: Any = None
        self.eval_dataset: Any = None
        self.generation_records: list[dict] | None = None
        self.run_info: dict[str, Any] = {}
        self.pixel_plan: BudgetPlan | None = None  # the image budget of every dataset (setup_processor)
        self.model: Any = None
        self.trainer: Any = None
        self.checkpoint_files: CheckpointFilesCallback | None = None
        self.stopper: GracefulStopCallback | None = None

    def setup(self) -> None:
        """Build everything up to a ready trainer. :class:`RecipeError` (nothing loaded past it) for a model
        that cannot be found, an unknown or unreadable dataset, or no training sample left."""
        self.check_software()
        transformers.set_seed(self.args.training.seed)
        if self.args.training.disable_tqdm:  # no bar at all, from the weight loader's on (setup_callbacks)
            transformers.utils.logging.disable_progress_bar()
        self.processor = self.setup_processor()
        self.train_dataset, self.eval_dataset, self.generation_records = self.setup_data()
        self.run_info = self.record_run()
        self.model = self.setup_model()
        # the attention actually used (--attn_implementation auto resolves by what is installed)
        self.run_info["attn_implementation"] = getattr(self.model.config, "_attn_implementation", None)
        logger.info("Attention implementation: %s", self.run_info["attn_implementation"])
        self.trainer = self.build_trainer()
        self.setup_callbacks()
        lrs = getattr(self.trainer, "group_lrs", None)
        logger.info("Parameters per group:\n%s", parameter_table(self.model, lrs))

    def train(self) -> None:
        """Train (resuming as ``--resume_from_checkpoint`` says), then save the final model."""
        if self.trainer is None:
            raise RuntimeError("TrainingRecipe.train() needs a trainer: call setup() first")
        self.trainer.train(resume_from_checkpoint=resolve_resume(self.args.training))
        self.save_final_model()
        if self.stopper is not None and self.stopper.requested:
            logger.warning(
                "Stopped by %s at step %d; resume with --resume_from_checkpoint auto",
                self.stopper.requested,
                self.trainer.state.global_step,
            )

    # -- the steps ----------------------------------------------------------------------------------
    def check_software(self) -> None:
        """:class:`RecipeError` where the installed libraries would train this run wrongly: ZeRO-3 on CPU
        processes with a DeepSpeed whose gloo gathers do not wait for every piece (:mod:`qwenvl.compat`)."""
        import torch
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled() and not torch.cuda.is_available():
            problem = zero3_on_gloo_problem()
            if problem:
                raise RecipeError(problem)

    def setup_processor(self) -> Any:
        """The processor with the run's global image budget (what a checkpoint's saved processor then holds);
        each dataset's own budget (``self.pixel_plan``) is applied per record."""
        try:
            self.pixel_plan = self.resolve_pixel_plan()
        except ValueError as e:
            raise RecipeError(str(e)) from e
        default = self.pixel_plan.default
        try:
            return load_training_processor(
                self.args.model.model_name_or_path, default.min_pixels, default.max_pixels
            )
        except ModelNotFoundError as e:
            raise RecipeError(str(e)) from e

    def resolve_pixel_plan(self) -> BudgetPlan:
        """The image budget of every dataset of the run (``--pixel_policy``, the dataset table, ``NAME@TOKENS``;
        :meth:`DataArguments.image_plan <qwenvl.train.arguments.DataArguments.image_plan>`)."""
        plan = self.args.data.image_plan()
        logger.info("Image budgets (%s): %s", plan.policy, describe_plan(plan))
        return plan

    def setup_data(self) -> tuple[Any, Any, list[dict] | None]:
        """``(train, eval, generation_records)``; the datasets log their report (records kept and dropped)."""
        data, gen = self.args.data, self.args.generation_eval
        try:
            train, evaluation = load_training_datasets(
                self.processor,
                data.dataset_use,
                data.model_max_length,
                self.args.training.seed,
                eval_dataset_use=data.eval_dataset_use,
                pixel_plan=self.pixel_plan,
                mixture_temperature=data.mixture_temperature,
            )
            records = None
            if gen.generation_eval_steps > 0:
                from qwenvl.eval.callback import generation_eval_records

                records = generation_eval_records(
                    data.dataset_use, data.eval_dataset_use, gen.generation_eval_samples
                )
        except (ValueError, KeyError) as e:
            raise RecipeError(e.args[0] if e.args else str(e)) from e
        if len(train) == 0:
            raise RecipeError("no training sample left after the checks; see the report above")
        starved = [
            line
            for dataset in (train, evaluation)
            if dataset is not None
            for line in over_length_datasets(dataset)
        ]
        if starved:
            raise RecipeError("\n".join(starved))
        if self.args.training.process_index == 0:
            logger.info(
                "%s", "\n".join(cost_lines(train.report, vision_trained=self.args.model.tune_mm_vision))
            )
        for dataset in (train, evaluation):
            if dataset is not None:  # a record that fails at training time is named in the run's log
                dataset.skip_markers = True
        return train, evaluation, records

    def record_run(self) -> dict[str, Any]:
        """``run_info.json``'s content, which every checkpoint gets: the resolved arguments, the seed, the
        dataset mix with its counts, the answer vocabularies, versions, git commit and base model. Rank 0
        writes the dataset part to ``<output_dir>/dataset_report.json`` now, before the model loads."""
        training = self.args.training
        info = {
            "arguments": self.args.as_record(),
            "seed": training.seed,
            "datasets": {
                "train": self.train_dataset.report,
                "eval": self.eval_dataset.report if self.eval_dataset else None,
            },
            "pixel_budgets": self.pixel_plan.as_record() if self.pixel_plan is not None else None,
            "projected_epoch": mix_cost(
                self.train_dataset.report, vision_trained=self.args.model.tune_mm_vision
            ).as_record(),
            "answer_vocabulary": vocabulary_table(self.answer_vocabularies()),
            "versions": versions(),
            "git_commit": git_commit(),
            "base_model": self.args.model.model_name_or_path,
        }
        if training.process_index == 0:
            Path(training.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(training.output_dir) / DATASET_REPORT).write_text(json.dumps(info["datasets"], indent=2))
        return info

    def answer_vocabularies(self) -> dict[str, dict[str, AnswerVocabulary]]:
        """The answer vocabulary of every option-task dataset trained on (run_info.json's
        ``answer_vocabulary``, what evaluation and the submission write answers in): as the converter recorded
        it, else learnt from the training answers (:func:`~qwenvl.flare.vocabulary.training_vocabularies`)."""
        return training_vocabularies(sample.record for sample in self.train_dataset.samples)

    def setup_model(self) -> Any:
        """The weights of ``--model_name_or_path`` in :func:`training_dtype`, through
        :func:`prepare_model_for_training` with the tune flags and LoRA settings."""
        model_args, lora_args, training = self.args.model, self.args.lora, self.args.training
        model = load_model(
            model_args.model_name_or_path,
            dtype=training_dtype(training, lora=lora_args.lora_enable),
            attn_implementation=model_args.attn_implementation,
        )
        text = model.config.get_text_config()
        if text.pad_token_id is None:  # what the Trainer would set, with a notice on every run
            text.pad_token_id = self.processor.tokenizer.pad_token_id
        lora = (
            LoraSettings.from_args(lora_args, tune_llm=model_args.tune_mm_llm)
            if lora_args.lora_enable
            else None
        )
        return prepare_model_for_training(
            model,
            tune_vision=model_args.tune_mm_vision,
            tune_merger=model_args.tune_mm_mlp,
            tune_llm=model_args.tune_mm_llm,
            lora=lora,
            gradient_checkpointing=training.gradient_checkpointing,
        )

    def build_trainer(self) -> transformers.Trainer:
        """The training mode's step: its Trainer over ``self.model``, ``self.processor`` and the datasets."""
        raise NotImplementedError(f"{type(self).__name__} must define build_trainer()")

    def setup_callbacks(self) -> None:
        """Checkpoints with their processor and run_info.json, a clean stop on SIGTERM / Ctrl-C, the live
        run record (``run.json``, ``train_log.jsonl``, ``train.log``) and, when asked, the generation eval."""
        trainer = self.trainer
        self.checkpoint_files = CheckpointFilesCallback(self.processor, self.run_info)
        if hasattr(trainer, "checkpoint_writers"):  # written before each checkpoint's completion marker
            trainer.checkpoint_writers.append(self.checkpoint_files.save_to)
            self.checkpoint_files.written_by_trainer = True
        self.stopper = GracefulStopCallback()
        # Without a progress bar (--disable_tqdm) no bar at all, the weight loader's and the checkpoint writer's
        # included (switched off in setup, before the model loads), and the console gets train.log's one-line
        # records instead of the Trainer's dicts.
        echo = bool(self.args.training.disable_tqdm)
        if echo:
            trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        record = RunRecordCallback(
            self.args.training.output_dir,
            self.run_info["arguments"],
            echo=echo,
            record_sets=self.record_sets(),
        )
        for callback in (self.checkpoint_files, self.stopper, record):
            trainer.add_callback(callback)
        if self.generation_records:
            from qwenvl.eval.callback import GenerationEvalCallback

            steps = self.args.generation_eval.generation_eval_steps
            trainer.add_callback(
                GenerationEvalCallback(
                    self.generation_records,
                    self.processor,
                    steps,
                    log_fn=trainer.log,
                    pixel_plan=self.pixel_plan,
                    backend=self.args.generation_eval.generation_eval_backend,
                    model_path=self.args.model.model_name_or_path,
                )
            )

    def record_sets(self) -> dict[str, dict]:
        """What the evaluations during training are on (the run log names them): ``eval`` (the eval loss: the
        kept records of ``--eval_dataset_use``) and ``generation`` (the generation metrics' subset), each
        :func:`~qwenvl.flare.schema.describe_records`."""
        sets = {}
        if self.eval_dataset is not None:
            sets["eval"] = describe_records([sample.record for sample in self.eval_dataset.samples])
        if self.generation_records:
            sets["generation"] = describe_records(self.generation_records)
        return sets

    def save_final_model(self) -> None:
        """Unless ``--save_strategy no``: the model, processor, run_info.json and trainer state in
        ``--output_dir`` (rank 0 writes the files; every rank takes part in gathering ZeRO-3 weights)."""
        training = self.args.training
        if str(getattr(training.save_strategy, "value", training.save_strategy)) == "no":
            return
        self.trainer.save_model(training.output_dir)
        if self.trainer.is_world_process_zero():
            self.checkpoint_files.save_to(training.output_dir)
            self.trainer.save_state()
            logger.info("Final model, processor and run_info.json saved in %s", training.output_dir)


class SFTRecipe(TrainingRecipe):
    """Supervised finetuning: :class:`~qwenvl.train.trainer.QwenVLTrainer` on padded or packed batches."""

    args: SFTArguments

    def build_trainer(self) -> QwenVLTrainer:
        args = self.args
        collator = build_collator(self.processor.tokenizer.pad_token_id, packing=args.packing.enabled)
        return build_sft_trainer(
            self.model,
            args.training,
            self.processor,
            self.train_dataset,
            collator,
            eval_dataset=self.eval_dataset,
            packing_max_tokens=args.packing.budget(args.data.model_max_length),
        )
