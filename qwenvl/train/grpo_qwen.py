"""GRPO on registered datasets, usually from an SFT checkpoint. Launch with torchrun (or
``scripts/grpo_qwen3_4b_flare.sh``):

    torchrun --nproc_per_node=1 qwenvl/train/grpo_qwen.py --model_name_or_path output/qwen3vl_flare25_starter \\
        --dataset_use flare_retino%100,flare_busi_det%100 --output_dir output/grpo --num_generations 4 ...

(``python -m qwenvl.train.grpo_qwen ...`` and the ``flare-grpo`` command work too.) The flags are those of
``train_qwen.py`` (model, data, LoRA, the Trainer's) with TRL's ``GRPOConfig`` as the Trainer's group and the
reward weights (:mod:`qwenvl.train.grpo_arguments`); the order of work is :mod:`qwenvl.train.recipe`'s, the
GRPO parts are in :mod:`qwenvl.train.grpo`. Exit status 2, with ``error: ...`` on stderr, for anything wrong
before training starts.
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from qwenvl.train.recipe import RecipeError, init_cpu_distributed

    argv = init_cpu_distributed(sys.argv[1:] if argv is None else argv)

    from qwenvl.train.arguments import ArgumentError
    from qwenvl.train.grpo import GRPORecipe
    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    try:
        args = parse_grpo_arguments(argv)
    except (ArgumentError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if args.training.process_index == 0 else logging.WARNING,
    )
    recipe = GRPORecipe(args)
    try:
        recipe.setup()
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    recipe.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
