"""The budget a record was trained with is the budget it is evaluated and submitted with: a run over two
datasets at different image budgets (chromosome up to 1,296 visual tokens per image, neojaundice the guide's
49), its checkpoint's run_info.json, then the evaluator and the submission on the same images, each counting
the visual tokens of every image it hands the model."""

from __future__ import annotations

import json
import shutil

import pytest

from qwenvl.eval.evaluate import EvalOptions, run_evaluation
from qwenvl.eval.generate import BatchGenerator, Generation
from qwenvl.eval.submission import SubmissionOptions, run_submission
from qwenvl.flare.pixels import BudgetPlan
from qwenvl.flare.raw import SPLIT_FOLDERS
from qwenvl.train.arguments import parse_arguments
from qwenvl.train.recipe import SFTRecipe

DATASETS = {"chromosome": "Microscopy", "neojaundice": "Clinical"}  # folder -> modality folder


def _key(dataset: str, image_name) -> tuple[str, str]:
    return dataset, json.dumps(image_name)


def _tokens(grid) -> list[int]:
    return [int(t * h * w) // 4 for t, h, w in grid.tolist()]  # 2x2 patches merge into one token


@pytest.fixture
def seen(monkeypatch):
    """Every image the generators hand the model, as ``{(dataset, ImageName): [visual tokens per image]}``:
    generation itself is replaced by a stand-in that records the batch's image grids."""
    out: dict[tuple[str, str], list[int]] = {}
    batches: list[list[dict]] = []
    original = BatchGenerator.generate_batch

    def generate_batch(self, records, max_new_tokens):
        batches.append(list(records))
        return original(self, records, max_new_tokens)

    def fake_generate(self, batch, max_new_tokens, constraint=None):
        records = batches[-1]
        tokens = iter(_tokens(batch["image_grid_thw"]))
        for record in records:
            images = record["image"] if isinstance(record["image"], list) else [record["image"]]
            meta = record["meta"]
            out[_key(meta["dataset"], meta["image_name"])] = [next(tokens) for _ in images]
        return [Generation("A") for _ in records]

    monkeypatch.setattr(BatchGenerator, "generate_batch", generate_batch)
    monkeypatch.setattr(BatchGenerator, "_generate", fake_generate)
    return out


def test_each_record_gets_the_same_visual_tokens_in_training_evaluation_and_submission(
    tiny_dir, demo_raw, demo_converted, registry_at, tmp_path, seen
):
    registry_at(demo_converted)
    run = tmp_path / "run"
    argv = ["--model_name_or_path", str(tiny_dir), "--output_dir", str(run), "--report_to", "none"]
    recipe = SFTRecipe(parse_arguments([*argv, "--dataset_use", "flare_chromosome,flare_neojaundice"]))
    recipe.setup()  # the per-dataset policy: no pixel flag given
    plan = recipe.pixel_plan
    assert plan.policy == "per_dataset"
    assert (plan.for_dataset("chromosome").max_tokens, plan.for_dataset("neojaundice").max_tokens) == (
        1296,
        49,
    )

    # Training: the visual tokens of every image, as the dataset encodes it for the Trainer.
    trained: dict[tuple[str, str], list[int]] = {}
    for i, sample in enumerate(recipe.train_dataset.samples):
        meta = sample.record["meta"]
        trained[_key(meta["dataset"], meta["image_name"])] = _tokens(
            recipe.train_dataset[i]["image_grid_thw"]
        )
    by_set = {d: [n for (ds, _), v in trained.items() if ds == d for n in v] for d in DATASETS}
    assert max(by_set["neojaundice"]) <= 49 < min(by_set["chromosome"])  # two budgets really differ

    # The checkpoint: the model's files and the run_info.json every checkpoint of this run carries.
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    for f in tiny_dir.iterdir():
        (ckpt / f.name).symlink_to(f)
    (ckpt / "run_info.json").write_text(json.dumps(recipe.run_info, default=str))
    assert BudgetPlan.from_run_info(json.loads((ckpt / "run_info.json").read_text())) == plan

    # Evaluation of the same (training) records, with the budgets read back from the checkpoint.
    options = EvalOptions(
        model_path=str(ckpt), output_dir=str(tmp_path / "eval"), datasets=list(DATASETS), split="train"
    )
    options.progress = False
    run_evaluation(options)
    assert seen == trained
    seen.clear()

    # The submission on the same images, laid out as the organisers mount their test set.
    inputs = tmp_path / "inputs"
    for dataset, modality in DATASETS.items():
        source = demo_raw / SPLIT_FOLDERS["train"] / modality / dataset
        target = inputs / modality / dataset
        shutil.copytree(source, target)
        (target / f"{dataset}_questions_train.json").rename(target / f"{dataset}_questions_test.json")
    summary = run_submission(
        SubmissionOptions(
            input_dir=str(inputs), output_dir=str(tmp_path / "out"), model_path=str(ckpt), progress=False
        )
    )
    assert seen == trained
    assert summary["pixel_budgets"]["datasets"]["chromosome"]["max_tokens"] == 1296
    assert summary["pixel_budgets"]["datasets"]["neojaundice"]["max_tokens"] == 49


def test_grpo_prompts_get_the_visual_tokens_the_records_were_trained_with(
    tiny_dir, demo_converted, registry_at, tmp_path
):
    """TRL makes GRPO's processor call itself, one call per batch: the images arrive fitted to their own
    records' budgets and the processor, its limits opened for the call, leaves them as they are."""
    pytest.importorskip("trl")
    from qwenvl.train.grpo import PromptSet, processor_limits_open

    registry_at(demo_converted)
    argv = [
        "--model_name_or_path",
        str(tiny_dir),
        "--output_dir",
        str(tmp_path / "run"),
        "--report_to",
        "none",
    ]
    recipe = SFTRecipe(parse_arguments([*argv, "--dataset_use", "flare_chromosome,flare_neojaundice"]))
    recipe.setup()
    dataset, processor = recipe.train_dataset, recipe.processor
    prompts = PromptSet(dataset)
    assert len(prompts) == len(dataset.samples)
    with processor_limits_open(processor):
        for i in range(len(prompts)):
            images = prompts.item(i)["images"]
            grid = processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
            assert (
                _tokens(grid)
                == _tokens(dataset[i]["image_grid_thw"])
                == list(dataset.samples[i].visual_tokens)
            )
    assert processor.image_processor.size["longest_edge"] == recipe.pixel_plan.default.max_pixels  # restored


def test_bad_budgets_stop_the_run_before_the_model_loads(tiny_dir, demo_converted, registry_at, tmp_path):
    from qwenvl.train.arguments import ArgumentError
    from qwenvl.train.recipe import RecipeError

    registry_at(demo_converted)
    argv = [
        "--model_name_or_path",
        str(tiny_dir),
        "--output_dir",
        str(tmp_path / "run"),
        "--report_to",
        "none",
    ]
    for extra, message in (
        (["--dataset_use", "flare_chromosome@0"], "at least 1 token per image"),
        (["--dataset_use", "flare_chromosome@300-200"], "the minimum 300 is above the maximum 200"),
        (
            ["--dataset_use", "flare_retino", "--min_pixels", "4096", "--max_pixels", "1024"],
            "min_pixels 4096 is larger",
        ),
        (["--dataset_use", "flare_retino", "--max_pixels", "512"], "below one visual token"),
        (["--dataset_use", "flare_retino", "--pixel_policy", "per_image"], "--pixel_policy 'per_image'"),
        (
            [
                "--dataset_use",
                "flare_retino@64",
                "--eval_dataset_use",
                "flare_retino_val@32",
                "--eval_strategy",
                "steps",
            ],
            "two image budgets",
        ),
    ):
        with pytest.raises(ArgumentError, match=message):
            parse_arguments([*argv, *extra])
    # A budget whose records cannot fit the length limit: named with the fix, before any weight is loaded.
    recipe = SFTRecipe(
        parse_arguments(
            [*argv, "--dataset_use", "flare_chromosome,flare_retino", "--model_max_length", "300"]
        )
    )
    with pytest.raises(
        RecipeError, match=r"flare_chromosome: every one of its \d+ records is longer than"
    ) as err:
        recipe.setup()
    assert "flare_chromosome@TOKENS" in str(err.value) and recipe.model is None


def test_a_grpo_step_trains_two_datasets_at_their_own_budgets(
    tiny_dir, demo_converted, registry_at, tmp_path
):
    """bcn20000's native ~60-token images (its budget 256) beside neojaundice's 49-token ones: TRL's
    rollouts and log-probability forward see each image at its own size (the processor, left at the global
    49 tokens, would shrink bcn20000's and break the image tokens' count)."""
    pytest.importorskip("trl")
    from qwenvl.train.grpo import GRPORecipe
    from qwenvl.train.grpo_arguments import parse_grpo_arguments

    registry_at(demo_converted)
    opts = {
        "model_name_or_path": str(tiny_dir),
        "dataset_use": "flare_bcn20000,flare_neojaundice",
        "output_dir": str(tmp_path / "grpo"),
        "max_steps": "1",
        "per_device_train_batch_size": "4",
        "num_generations": "2",
        "max_completion_length": "3",
        "logging_steps": "1",
        "save_strategy": "no",
        "report_to": "none",
        "gradient_checkpointing": "False",
        "dataloader_num_workers": "0",
        "seed": "7",
    }
    recipe = GRPORecipe(parse_grpo_arguments([x for k, v in opts.items() for x in (f"--{k}", v)]))
    recipe.setup()
    assert recipe.pixel_plan.for_dataset("bcn20000").max_tokens == 256
    assert recipe.processor.image_processor.size["longest_edge"] == 50176
    recipe.train()
    log = [json.loads(x) for x in (tmp_path / "grpo" / "train_log.jsonl").read_text().splitlines() if x]
    assert [r["step"] for r in log if "loss" in r] == [1]
