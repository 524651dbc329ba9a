"""Image budgets: how many visual tokens an image may become, per dataset or one for the whole run.

One LLM visual token of Qwen3-VL covers a 32 x 32 block of pixels (patch 16, spatial merge 2), so a budget in
pixels and a budget in visual tokens are the same thing: ``max_pixels`` 50,176 (the guide's) is 49 tokens,
a 224 x 224 view. This module is the one home of that arithmetic. The dataset table
(:data:`qwenvl.flare.datasets.FLARE_DATASETS`) states each dataset's budget in visual tokens, with its reason.

A :class:`BudgetPlan` is what a run uses: its policy (``per_dataset`` or ``global``), the global budget (the
``--min_pixels`` / ``--max_pixels`` of the guide; also the fallback for a dataset the table does not know) and
the budget of every dataset it names. Training writes it into ``run_info.json`` (``pixel_budgets``); every tool
that takes a checkpoint (evaluation, inference, generation eval, GRPO, the submission) reads it back with
:meth:`BudgetPlan.from_run_info` and gives each record :meth:`BudgetPlan.for_record`, so a record is seen with
the same number of visual tokens wherever the model sees it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qwenvl.flare import defaults
from qwenvl.flare.datasets import FLARE_DATASETS, resolve_dataset_name

VISUAL_TOKEN_SIDE = 32  # pixels per side of the block one LLM visual token covers (patch 16 x merge 2)
PIXELS_PER_TOKEN = VISUAL_TOKEN_SIDE * VISUAL_TOKEN_SIDE  # 1,024

PER_DATASET = "per_dataset"  # each dataset its own budget from the dataset table
GLOBAL = "global"  # one budget (--min_pixels / --max_pixels) for every image
AUTO = "auto"  # global when --min_pixels or --max_pixels is given, else per_dataset
POLICIES = (AUTO, PER_DATASET, GLOBAL)

SOURCE_TABLE = "dataset table"
SOURCE_OVERRIDE = "override"
SOURCE_GLOBAL = "global"
SOURCE_CHECKPOINT = "checkpoint"  # the budget the starting checkpoint trained the dataset with
MAX_ASPECT_RATIO = 200  # the Qwen-VL processor refuses images more elongated than this


def smart_resize(
    height: int, width: int, min_pixels: int, max_pixels: int, factor: int = VISUAL_TOKEN_SIDE
) -> tuple[int, int]:
    """The (height, width) the image processor resizes an image to, computed without touching pixels.

    Sides are rounded to the nearest multiple of ``factor`` (the side of one visual token: 32 for Qwen3-VL);
    if the area then exceeds ``max_pixels`` the image is scaled down (sides floored to the grid, at least one
    block), if it falls below ``min_pixels`` it is scaled up (sides ceiled to the grid, which can overshoot
    ``max_pixels`` slightly when both limits are close). Same arithmetic as transformers' Qwen2-VL processor.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}.")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"image {width}x{height} has aspect ratio above {MAX_ASPECT_RATIO}; the Qwen-VL processor refuses it."
        )
    new_h = round(height / factor) * factor
    new_w = round(width / factor) * factor
    if new_h * new_w > max_pixels:
        scale = math.sqrt((height * width) / max_pixels)
        new_h = max(factor, math.floor(height / scale / factor) * factor)
        new_w = max(factor, math.floor(width / scale / factor) * factor)
    elif new_h * new_w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * scale / factor) * factor
        new_w = math.ceil(width * scale / factor) * factor
    return new_h, new_w


def tokens_to_pixels(tokens: int) -> int:
    """The pixel area of ``tokens`` visual tokens."""
    return int(tokens) * PIXELS_PER_TOKEN


def pixels_to_tokens(pixels: int) -> int:
    """The most visual tokens an area of ``pixels`` holds (at least 1 for any positive area)."""
    return max(1, int(pixels) // PIXELS_PER_TOKEN) if pixels > 0 else 0


@dataclass(frozen=True)
class ImageBudget:
    """The image processor's resize limits for one image: its area is brought into ``[min_pixels,
    max_pixels]`` on the 32-pixel grid (transformers' ``smart_resize``)."""

    min_pixels: int
    max_pixels: int

    @classmethod
    def from_tokens(cls, max_tokens: int, min_tokens: int | None = None) -> ImageBudget:
        """A budget of at most ``max_tokens`` visual tokens, at least ``min_tokens`` (default: the guide's
        ``min_pixels``, 784, under one token)."""
        low = tokens_to_pixels(min_tokens) if min_tokens else defaults.MIN_PIXELS
        return cls(low, tokens_to_pixels(max_tokens))

    @property
    def max_tokens(self) -> int:
        """The most visual tokens an image gets (a 32 x 32 block each)."""
        return pixels_to_tokens(self.max_pixels)

    @property
    def min_tokens(self) -> int:
        """The fewest visual tokens an image gets: ``ceil(min_pixels / 1024)``."""
        return max(1, math.ceil(self.min_pixels / PIXELS_PER_TOKEN))

    @property
    def side(self) -> int:
        """The side in pixels of the square view ``max_pixels`` allows (224 for 50,176)."""
        return int(math.isqrt(self.max_pixels))

    def processor_size(self) -> dict[str, int]:
        """The ``size`` keyword an image-processor call takes (``{"shortest_edge": min, "longest_edge": max}``:
        transformers names the pixel areas so)."""
        return {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}

    def describe(self) -> str:
        """``"<= 256 tokens (262,144 px, 512x512)"``, with the minimum when it is above one token."""
        low = f"{self.min_tokens}-" if self.min_tokens > 1 else "<= "
        return f"{low}{self.max_tokens} tokens ({self.max_pixels:,} px, {self.side}x{self.side})"

    def problems(self, where: str) -> list[str]:
        """Why this budget cannot be used (empty list: fine); ``where`` names the dataset or flag."""
        out = []
        if self.min_pixels <= 0 or self.max_pixels <= 0:
            out.append(f"{where}: pixel limits must be positive, got {self.min_pixels} and {self.max_pixels}")
        elif self.max_pixels < PIXELS_PER_TOKEN:
            out.append(
                f"{where}: max_pixels {self.max_pixels} is below one visual token "
                f"({VISUAL_TOKEN_SIDE}x{VISUAL_TOKEN_SIDE} = {PIXELS_PER_TOKEN} pixels); use >= {PIXELS_PER_TOKEN}"
            )
        if self.min_pixels > self.max_pixels:
            out.append(
                f"{where}: min_pixels {self.min_pixels} is larger than max_pixels {self.max_pixels}; "
                "lower the minimum or raise the maximum"
            )
        return out

    def as_record(self) -> dict[str, int]:
        return {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels, "max_tokens": self.max_tokens}


# ------------------------------------------------------------------------------------- the override syntax
_TOKENS_RE = re.compile(r"^(?:(\d+)-)?(\d+)$")


def parse_token_range(text: str, where: str) -> tuple[int | None, int]:
    """``"1280"`` -> ``(None, 1280)``; ``"256-1280"`` -> ``(256, 1280)`` (visual tokens). ``ValueError``
    naming ``where`` for anything else, a zero maximum or a minimum above the maximum."""
    m = _TOKENS_RE.match(text.strip())
    if not m:
        raise ValueError(
            f"bad visual-token budget in {where!r}: expected NAME@MAX or NAME@MIN-MAX in visual tokens "
            "(32x32-pixel blocks), e.g. flare_chromosome@1280 or flare_neurips22cell@256-1024"
        )
    low = int(m.group(1)) if m.group(1) else None
    high = int(m.group(2))
    if high < 1:
        raise ValueError(f"visual-token budget in {where!r} must be at least 1 token per image")
    if low is not None and low > high:
        raise ValueError(
            f"visual-token budget in {where!r}: the minimum {low} is above the maximum {high}; write MIN-MAX"
        )
    return low, high


# ------------------------------------------------------------------------------------------------ plans
def dataset_key(name: str | None) -> str | None:
    """The name budgets are kept under: a FLARE25 dataset's folder name for any of its spellings
    (``BUSI-det``, ``flare_busi_det``, ``flare_busi_det_val``...), any other registered name as it is."""
    if not name:
        return None
    stem = re.sub(r"_(val_hidden|val|test)$", "", name)
    for candidate in (name, stem):
        try:
            return resolve_dataset_name(candidate)
        except KeyError:
            continue
    return name


def record_dataset(record: dict) -> str | None:
    """The dataset a converted record belongs to: ``meta.dataset`` (a FLARE folder name), else the registry
    name it was loaded under (``_source.dataset``)."""
    meta = record.get("meta")
    name = meta.get("dataset") if isinstance(meta, dict) else None
    if not name:
        source = record.get("_source")
        name = source.get("dataset") if isinstance(source, dict) else None
    return dataset_key(name) if isinstance(name, str) else None


@dataclass(frozen=True)
class BudgetPlan:
    """The image budgets of a run: ``policy``, the global budget ``default`` and one budget per dataset it
    names (keys as :func:`dataset_key` gives them), with where each came from (``sources``)."""

    policy: str
    default: ImageBudget
    per_dataset: Mapping[str, ImageBudget] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    def for_dataset(self, name: str | None) -> ImageBudget:
        """The budget of dataset ``name`` (any spelling), else the global one."""
        key = dataset_key(name)
        return self.per_dataset.get(key, self.default) if key else self.default

    def for_record(self, record: dict) -> ImageBudget:
        """The budget a converted record's images get."""
        key = record_dataset(record)
        return self.per_dataset.get(key, self.default) if key else self.default

    def budgets(self) -> set[ImageBudget]:
        """Every distinct budget of the plan, the global one included."""
        return {self.default, *self.per_dataset.values()}

    def as_record(self) -> dict[str, Any]:
        """The plan as ``run_info.json``'s ``pixel_budgets`` block."""
        return {
            "policy": self.policy,
            "visual_token_pixels": PIXELS_PER_TOKEN,
            "global": self.default.as_record(),
            "datasets": {
                name: {**budget.as_record(), "source": self.sources.get(name, SOURCE_TABLE)}
                for name, budget in self.per_dataset.items()
            },
        }

    @classmethod
    def from_record(cls, block: Mapping[str, Any]) -> BudgetPlan:
        """The plan of a ``pixel_budgets`` block (``ValueError`` when it is malformed)."""
        try:
            default = ImageBudget(int(block["global"]["min_pixels"]), int(block["global"]["max_pixels"]))
            per = {
                str(k): ImageBudget(int(v["min_pixels"]), int(v["max_pixels"]))
                for k, v in (block.get("datasets") or {}).items()
            }
            sources = {
                str(k): str(v.get("source", SOURCE_TABLE)) for k, v in (block.get("datasets") or {}).items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed pixel_budgets block in run_info.json: {exc!r}") from None
        return cls(str(block.get("policy", PER_DATASET)), default, per, sources)

    @classmethod
    def from_run_info(cls, info: Mapping[str, Any]) -> BudgetPlan | None:
        """The plan a checkpoint was trained with: its ``pixel_budgets`` block, else (a checkpoint written
        before per-dataset budgets) its one ``--min_pixels`` / ``--max_pixels`` pair; ``None`` when
        ``run_info.json`` says neither (a base model)."""
        if isinstance(info.get("pixel_budgets"), Mapping):
            return cls.from_record(info["pixel_budgets"])
        data = (info.get("arguments") or {}).get("data") or {}
        if data.get("min_pixels") is not None and data.get("max_pixels") is not None:
            return cls.single(ImageBudget(int(data["min_pixels"]), int(data["max_pixels"])))
        return None

    @classmethod
    def single(cls, budget: ImageBudget) -> BudgetPlan:
        """One budget for every image (the guide's way, or a checkpoint that recorded no plan)."""
        return cls(GLOBAL, budget)

    def inherit(self, trained: BudgetPlan) -> BudgetPlan:
        """This run's plan when it continues a checkpoint trained with ``trained`` (GRPO after SFT): every
        dataset without an explicit ``NAME@TOKENS`` keeps the budget the checkpoint trained it with (its global
        one for a dataset it did not name), and the global budget is the checkpoint's. Under the ``global``
        policy (the user gave ``--min_pixels`` / ``--max_pixels``) the plan stays as it is."""
        if self.policy == GLOBAL:
            return self
        per = dict(self.per_dataset)
        sources = dict(self.sources)
        for name in list(per):
            if sources.get(name) != SOURCE_OVERRIDE:
                per[name], sources[name] = trained.for_dataset(name), SOURCE_CHECKPOINT
        return BudgetPlan(trained.policy, trained.default, per, sources)

    def table(self, names: Iterable[str] | None = None) -> list[tuple[str, ImageBudget, str]]:
        """``(dataset, budget, source)`` rows for ``names`` (default: the datasets the plan names)."""
        keys = [dataset_key(n) or n for n in names] if names is not None else list(self.per_dataset)
        rows = []
        for key in dict.fromkeys(keys):
            if key in self.per_dataset:
                rows.append((key, self.per_dataset[key], self.sources.get(key, SOURCE_TABLE)))
            else:
                rows.append((key, self.default, SOURCE_GLOBAL))
        return rows


def table_budget(name: str) -> ImageBudget | None:
    """The dataset table's budget of a FLARE25 dataset (any spelling), ``None`` for any other dataset."""
    key = dataset_key(name)
    config = FLARE_DATASETS.get(key) if key else None
    return ImageBudget.from_tokens(config.visual_tokens, config.min_visual_tokens) if config else None


def resolve_policy(policy: str, explicit_global: bool) -> str:
    """``auto`` -> ``global`` when the user gave ``--min_pixels`` / ``--max_pixels`` (the guide's one budget
    keeps its meaning), else ``per_dataset``; the other policies as they are."""
    if policy not in POLICIES:
        raise ValueError(f"unknown pixel policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if policy == AUTO:
        return GLOBAL if explicit_global else PER_DATASET
    return policy


def build_plan(
    policy: str,
    default: ImageBudget,
    datasets: Iterable[str],
    overrides: Mapping[str, tuple[int | None, int]] | None = None,
) -> BudgetPlan:
    """The plan of a run over ``datasets`` (registry names or FLARE folder names): under ``per_dataset``
    each FLARE dataset gets the table's budget, any other dataset ``default``; under ``global`` every dataset
    gets ``default``. ``overrides`` (``{name: (min_tokens or None, max_tokens)}``, from ``NAME@TOKENS``) win
    under both policies. ``policy`` must be resolved already (not ``auto``)."""
    if policy not in (PER_DATASET, GLOBAL):
        raise ValueError(f"build_plan needs a resolved policy ({PER_DATASET} or {GLOBAL}), got {policy!r}")
    per: dict[str, ImageBudget] = {}
    sources: dict[str, str] = {}
    for name in datasets:
        key = dataset_key(name)
        if key is None or key in per:
            continue
        budget = table_budget(key) if policy == PER_DATASET else None
        if budget is not None:
            per[key], sources[key] = budget, SOURCE_TABLE
    for name, (low, high) in (overrides or {}).items():
        key = dataset_key(name) or name
        low_pixels = tokens_to_pixels(low) if low else min(default.min_pixels, tokens_to_pixels(high))
        per[key], sources[key] = ImageBudget(low_pixels, tokens_to_pixels(high)), SOURCE_OVERRIDE
    return BudgetPlan(policy, default, per, sources)


def plan_problems(plan: BudgetPlan) -> list[str]:
    """Every budget of the plan that cannot be used, each naming its dataset and the fix."""
    out = plan.default.problems("--min_pixels/--max_pixels")
    for name, budget in plan.per_dataset.items():
        out.extend(budget.problems(f"dataset {name}"))
    return out


def describe_plan(plan: BudgetPlan) -> str:
    """One line: each dataset's most visual tokens per image, then the global budget."""
    named = ", ".join(
        f"{name} {budget.max_tokens}" + (f" ({source})" if source != SOURCE_TABLE else "")
        for name, budget, source in plan.table()
    )
    rest = f"other images {plan.default.describe()}"
    return f"{named}; {rest}" if named else rest


def budget_table() -> str:
    """The image budget of every dataset as a Markdown table (the README's; ``python -m
    qwenvl.flare.pixels`` prints it): most and fewest visual tokens per image, the square view the most
    allows, and the reason."""
    lines = [
        "| dataset | task types | visual tokens per image | view | why |",
        "|---|---|---|---|---|",
    ]
    for name, config in FLARE_DATASETS.items():
        budget = ImageBudget.from_tokens(config.visual_tokens, config.min_visual_tokens)
        tokens = (
            f"{budget.min_tokens}-{budget.max_tokens}"
            if config.min_visual_tokens
            else f"<= {budget.max_tokens}"
        )
        lines.append(
            f"| {name} | {', '.join(config.task_types)} | {tokens} | {budget.side}x{budget.side} | "
            f"{config.budget_reason} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(budget_table())
