"""Finetune a Qwen3-VL model on registered datasets. Launch with torchrun:

    torchrun --nproc_per_node=1 qwenvl/train/train_qwen.py --model_name_or_path Qwen/Qwen3-VL-4B-Instruct \\
        --dataset_use flare_retino%100 --output_dir output/run --deepspeed configs/zero3_offload.json ...

(``python -m qwenvl.train.train_qwen ...`` works too.) The flags are described in
:mod:`qwenvl.train.arguments`, the order of work in :mod:`qwenvl.train.recipe`: arguments checked ->
processor loaded -> datasets resolved, checked and length-filtered (report written) -> model loaded ->
training, so that every mistake surfaces in seconds rather than hours. Exit status 2, with ``error: ...`` on
stderr, for anything wrong before training starts.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from qwenvl.train.recipe import run_recipe

    def mode():
        from qwenvl.train.arguments import parse_arguments
        from qwenvl.train.recipe import SFTRecipe

        return parse_arguments, SFTRecipe

    return run_recipe(argv, mode)


if __name__ == "__main__":
    from qwenvl.train.recipe import exit_process

    exit_process(main())
