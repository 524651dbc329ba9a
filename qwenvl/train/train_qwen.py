"""Finetune a Qwen3-VL model on registered datasets. Launch with torchrun:

    torchrun --nproc_per_node=1 qwenvl/train/train_qwen.py --model_name_or_path Qwen/Qwen3-VL-4B-Instruct \\
        --dataset_use flare_retino%100 --output_dir output/run --deepspeed configs/zero3_offload.json ...

Order of work, so that every mistake surfaces in seconds rather than hours: arguments checked -> processor
loaded -> datasets resolved, checked and length-filtered (report written) -> model loaded -> training.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from qwenvl.flare.runfiles import DATASET_REPORT


def _init_cpu_distributed(argv: list[str]) -> list[str]:
    """DeepSpeed without a GPU (the demo, CI): set up the gloo process group and accelerate's DeepSpeed state
    before TrainingArguments exist, and tell TrainingArguments to use that state.

    Left alone, accelerate sees no GPU backend and reports a world size of 1, so DeepSpeed's batch-size check
    fails with 2 processes and ZeRO-3 partitioned loading would not see every rank."""
    import torch

    on_deepspeed = any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in argv)
    if not on_deepspeed or torch.cuda.is_available() or "WORLD_SIZE" not in os.environ:
        return argv
    if any(a.startswith("--accelerator_config") for a in argv):
        return argv  # the user configures accelerate themselves
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    from accelerate import PartialState

    PartialState(backend="gloo")
    config = Path(tempfile.gettempdir()) / f"qwenvl_accelerate_configured_state_{os.getpid()}.json"
    config.write_text(json.dumps({"use_configured_state": True}))
    return [*argv, "--accelerator_config", str(config)]


def _resolve_resume(args, log) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if args.resume_from_checkpoint != "auto":
        if args.resume_from_checkpoint:
            log.info("Resuming from %s", args.resume_from_checkpoint)
        return args.resume_from_checkpoint
    last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    if last:
        log.info("Resuming from %s (the latest checkpoint in %s)", last, args.output_dir)
    else:
        log.info(
            "--resume_from_checkpoint auto: no checkpoint in %s yet, starting from scratch", args.output_dir
        )
    return last


def main(argv: list[str] | None = None) -> int:
    argv = _init_cpu_distributed(sys.argv[1:] if argv is None else argv)

    import transformers

    from qwenvl.train.arguments import ArgumentError, parse_arguments

    try:
        model_args, data_args, args = parse_arguments(argv)
    except ArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from qwenvl.data.collator import PackedCollator, PaddedCollator
    from qwenvl.data.dataset import build_supervised_dataset
    from qwenvl.eval.callback import GenerationEvalCallback, generation_eval_records
    from qwenvl.model import ModelNotFoundError, load_model, load_processor
    from qwenvl.train.callbacks import (
        CheckpointFilesCallback,
        GracefulStopCallback,
        RunRecordCallback,
        git_commit,
        versions,
    )
    from qwenvl.train.params import apply_freeze, parameter_table
    from qwenvl.train.trainer import QwenVLTrainer

    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if args.process_index == 0 else logging.WARNING,
    )
    log = logging.getLogger("train_qwen")
    transformers.set_seed(args.seed)

    try:
        processor = load_processor(
            model_args.model_name_or_path, min_pixels=data_args.min_pixels, max_pixels=data_args.max_pixels
        )
    except ModelNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train_ds = build_supervised_dataset(
            data_args.dataset_use, processor, args.model_max_length, seed=args.seed, require_labels=True
        )
        eval_ds = (
            build_supervised_dataset(
                data_args.eval_dataset_use,
                processor,
                args.model_max_length,
                seed=args.seed,
                require_labels=True,
            )
            if data_args.eval_dataset_use
            else None
        )
        gen_records = (
            generation_eval_records(
                data_args.dataset_use, data_args.eval_dataset_use, data_args.generation_eval_samples
            )
            if data_args.generation_eval_steps > 0
            else None
        )
    except (ValueError, KeyError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if len(train_ds) == 0:
        print("error: no training sample left after the checks; see the report above", file=sys.stderr)
        return 2

    run_args = {"model": asdict(model_args), "data": asdict(data_args), "training": args.to_dict()}
    run_info = {
        "arguments": run_args,
        "seed": args.seed,
        "datasets": {"train": train_ds.report, "eval": eval_ds.report if eval_ds else None},
        "versions": versions(),
        "git_commit": git_commit(),
        "base_model": model_args.model_name_or_path,
    }
    if args.process_index == 0:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / DATASET_REPORT).write_text(json.dumps(run_info["datasets"], indent=2))

    # DeepSpeed keeps fp32 master weights itself, and LoRA's trained weights stay fp32 inside peft, so those
    # load in half precision. A plain full finetune loads fp32 and lets --bf16 autocast the compute: bf16
    # weights updated in place would lose updates around 1e-5 to rounding.
    half = "bfloat16" if args.bf16 else ("float16" if args.fp16 else "float32")
    dtype = half if (args.deepspeed or args.lora_enable) else "float32"
    model = load_model(
        model_args.model_name_or_path, dtype=dtype, attn_implementation=model_args.attn_implementation
    )
    model.config.use_cache = False
    if hasattr(model.config, "text_config"):
        model.config.text_config.use_cache = False
    apply_freeze(model, model_args.tune_mm_vision, model_args.tune_mm_mlp, model_args.tune_mm_llm)
    if args.gradient_checkpointing and (args.lora_enable or not model_args.tune_mm_llm):
        model.enable_input_require_grads()  # checkpointed layers need an input that requires grad
    if args.lora_enable:
        from qwenvl.train.lora import LoraSettings, apply_lora

        settings = LoraSettings.from_args(args, tune_llm=model_args.tune_mm_llm)
        model = apply_lora(model, settings, model_args.tune_mm_vision, model_args.tune_mm_mlp)

    pad_id = processor.tokenizer.pad_token_id
    collator_class = PackedCollator if data_args.packing else PaddedCollator
    packing_max_tokens = (
        (data_args.packing_max_tokens or args.model_max_length) if data_args.packing else None
    )
    trainer = QwenVLTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator_class(pad_token_id=pad_id),
        processing_class=processor,
        vision_lr=args.vision_tower_lr,
        merger_lr=args.mm_projector_lr,
        packing_max_tokens=packing_max_tokens,
    )
    files = CheckpointFilesCallback(processor, run_info)
    stopper = GracefulStopCallback()
    for cb in (files, stopper, RunRecordCallback(args.output_dir, run_args)):
        trainer.add_callback(cb)
    if gen_records:
        trainer.add_callback(
            GenerationEvalCallback(
                gen_records, processor, data_args.generation_eval_steps, log_fn=trainer.log
            )
        )
    log.info("Parameters per group:\n%s", parameter_table(model, trainer.group_lrs))

    resume = _resolve_resume(args, log)
    trainer.train(resume_from_checkpoint=resume)

    if str(getattr(args.save_strategy, "value", args.save_strategy)) != "no":
        trainer.save_model(args.output_dir)
        if trainer.is_world_process_zero():
            files.save_to(args.output_dir)
            trainer.save_state()
            log.info("Final model, processor and run_info.json saved in %s", args.output_dir)
    if stopper.requested:
        log.warning(
            "Stopped by %s at step %d; resume with --resume_from_checkpoint auto",
            stopper.requested,
            trainer.state.global_step,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
