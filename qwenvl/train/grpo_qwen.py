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


def main(argv: list[str] | None = None) -> int:
    from qwenvl.train.recipe import run_recipe

    def mode():
        from qwenvl.train.grpo import GRPORecipe
        from qwenvl.train.grpo_arguments import parse_grpo_arguments

        return parse_grpo_arguments, GRPORecipe

    return run_recipe(argv, mode)


if __name__ == "__main__":
    from qwenvl.train.recipe import exit_process

    exit_process(main())
