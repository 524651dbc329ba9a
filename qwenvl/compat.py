"""Every place the toolkit adapts to the version of a library it runs on: the one home of such knowledge.

The toolkit is tested on two sets of versions (CI runs the suite in both): the lock (``uv.lock``) and the low end
of ``pyproject.toml``'s range, pinned in ``.ci/low-env.txt`` (the GPU machines' Python 3.12, torch 2.11,
transformers 5.17, accelerate 1.15). Each function below is one adaptation, with its test in
``tests/test_compat.py``; the rest of the code calls these instead of asking for versions itself.

=================================  ==========================================================================
adaptation                         what differs
=================================  ==========================================================================
:func:`hand_on_checkpointing`      transformers 5.2x renamed ``TrainingArguments.gradient_checkpointing`` to
                                   ``activation_checkpointing`` (the old name warns); 5.17 has only the old
                                   one. The guide's ``--gradient_checkpointing True`` must turn it on in both.
:func:`is_checkpointing`           the model's flag: ``is_activation_checkpointing`` (5.2x; the old
                                   ``is_gradient_checkpointing`` warns) or ``is_gradient_checkpointing``.
:func:`quiet_checkpointing_reads`  PEFT (while it wraps the model) and TRL (every GRPO rollout step) read
                                   the model's ``is_gradient_checkpointing``, which warns on transformers
                                   5.2x: the one warning is silenced around those calls.
:func:`image_pixel_limits`,        the image processor's pixel limits live in ``size`` as
:func:`set_image_pixel_limits`     ``shortest_edge`` / ``longest_edge`` (pixels, not edges), a dict or a
                                   ``SizeDict`` depending on how the processor was made.
:func:`register_attention`         how an attention implementation and its mask function are registered
                                   (``AttentionInterface``, ``ALL_MASK_ATTENTION_FUNCTIONS``).
:func:`torch_varlen_attn`          PyTorch's varlen flash kernel, ``torch.nn.attention.varlen`` where this
                                   torch has it.
:func:`torchrun_has_shutdown_timeout`  ``torch.distributed.run --shutdown-timeout`` (torch 2.12 and later);
                                   older torchrun reads ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` only.
:func:`recover_interrupted_builds`  how a C++ extension build (DeepSpeed's CPU Adam and shared-memory ops)
                                   is locked: a file lock (newer torch) or a file whose mere presence
                                   means "building" (torch 2.11): one left by an interrupted build made
                                   every later run wait for it forever, in silence.
:func:`zero3_on_gloo_problem`      DeepSpeed 0.19.7 and older gather a ZeRO-3 parameter over gloo (CPU
                                   processes) without waiting for every piece: the parameter can hold
                                   uninitialised values (NaN logits, a logged loss of 0.0). Not adapted
                                   (the bound is ``deepspeed>=0.19.8``): refused, with the fix.
=================================  ==========================================================================

Nothing here imports torch or transformers at module level: the launch probe imports this module cheaply.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------- checkpointing
# TrainingArguments' checkpointing fields: (the guide's name, transformers 5.2x's name).
CHECKPOINTING_FIELDS = (
    ("gradient_checkpointing", "activation_checkpointing"),
    ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def hand_on_checkpointing(args: Any) -> None:
    """Before ``TrainingArguments.__post_init__``: where this transformers has ``activation_checkpointing``, move
    a value given under the guide's ``gradient_checkpointing`` name to it (the old name would warn on every run;
    afterwards transformers sets both names to the same value, so code reading either keeps working). Where it
    has only ``gradient_checkpointing`` (5.17), leave the value where it is: that is the field it reads."""
    names = _field_names(type(args))
    for old, new in CHECKPOINTING_FIELDS:
        if new in names and getattr(args, new, None) is None and getattr(args, old, None) is not None:
            setattr(args, new, getattr(args, old))
            setattr(args, old, None)


def is_checkpointing(model: Any) -> bool:
    """Whether gradient (activation) checkpointing is on in ``model`` (a PEFT wrapper too), read without the
    deprecation warning of the old property."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        for candidate in (model, getattr(model, "base_model", None), getattr(model, "model", None)):
            if candidate is not None and isinstance(getattr(type(candidate), name, None), property):
                return bool(getattr(candidate, name))
    return any(bool(getattr(m, "gradient_checkpointing", False)) for m in model.modules())


@contextmanager
def quiet_checkpointing_reads() -> Iterator[None]:
    """Around library code that reads ``model.is_gradient_checkpointing``, deprecated in transformers 5.2x (a
    FutureWarning the user cannot act on): PEFT's ``get_peft_model``, and TRL's GRPO rollout step
    (``unwrap_model_for_generation`` and ``disable_gradient_checkpointing`` switch checkpointing off for the
    generation and the no-grad forward, and back on). Only that warning is silenced, only inside."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


# ------------------------------------------------------------------------------------ pixel limits
def _size_entry(size: Any, key: str) -> int | None:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
    return int(value) if value is not None else None


def image_pixel_limits(image_processor: Any) -> tuple[int | None, int | None]:
    """``(min_pixels, max_pixels)`` the image processor will apply: ``size``'s ``shortest_edge`` and
    ``longest_edge`` (a dict or a ``SizeDict``; they count pixels), else its own ``min_pixels`` / ``max_pixels``
    attributes where it has them; None for a limit it does not state."""
    size = getattr(image_processor, "size", None)
    low = _size_entry(size, "shortest_edge") or getattr(image_processor, "min_pixels", None)
    high = _size_entry(size, "longest_edge") or getattr(image_processor, "max_pixels", None)
    return (None if low is None else int(low), None if high is None else int(high))


def set_image_pixel_limits(image_processor: Any, min_pixels: int, max_pixels: int) -> None:
    """Make the image processor resize into ``[min_pixels, max_pixels]``: ``size`` replaced by the dict it reads,
    and ``min_pixels`` / ``max_pixels`` attributes updated where the processor keeps them."""
    image_processor.size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if getattr(image_processor, name, None) is not None:
            setattr(image_processor, name, int(value))


# --------------------------------------------------------------------------------------- attention
def register_attention(name: str, forward: Callable[..., Any], mask: str = "flash_attention_2") -> None:
    """Make ``name`` a valid ``attn_implementation``: ``forward`` as its attention function, and the mask
    function of the implementation ``mask`` (default: flash attention's, no 4-D mask, only the 2-D padding
    mask when there is padding). Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(name, forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[mask])


def torch_varlen_attn() -> Callable[..., Any] | None:
    """``torch.nn.attention.varlen.varlen_attn`` where this torch has it, else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


# ------------------------------------------------------------------------------------------ torchrun
def torchrun_has_shutdown_timeout() -> bool:
    """Whether this torch's ``torch.distributed.run`` takes ``--shutdown-timeout`` (the grace period between
    forwarding SIGTERM to the workers and killing them); without it torchrun reads
    ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` where it reads anything."""
    import torch.distributed.run as run

    parser = run.get_args_parser()
    return any("--shutdown-timeout" in action.option_strings for action in parser._actions)


# ------------------------------------------------------------------------------------ extension builds
class LockedBaton:
    """``torch.utils.file_baton.FileBaton``'s interface (what torch's C++ extension loader calls) on an
    ``flock`` of the same lock file, as newer torch locks its builds: the lock belongs to a living process, so
    a file left behind by a build that was killed (Ctrl-C, a scheduler's kill, a timeout) no longer stops
    anything; the next build takes it over, says so, and builds again. Released, the file is removed as
    ``FileBaton`` removes it, so an unadapted process waiting on the file sees the build end."""

    def __init__(
        self, lock_file_path: str, wait_seconds: float = 0.1, warn_after_seconds: float | None = None
    ):
        self.lock_file_path = lock_file_path
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        """Whether this process now builds (True), or another living process is building (False)."""
        import fcntl

        while True:
            left_behind = os.path.exists(self.lock_file_path)
            fd = os.open(self.lock_file_path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same_file = os.stat(self.lock_file_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:  # not a file the previous holder removed while this process opened it
                break
            os.close(fd)
        self.fd = fd
        if left_behind:
            logger.warning(
                "%s was left by a build that did not finish (an interrupted run): building the extension again",
                self.lock_file_path,
            )
        return True

    def wait(self) -> None:
        """Until the process building has finished (its lock released), or at once if it already has."""
        import fcntl

        try:
            fd = os.open(self.lock_file_path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.lock_file_path)
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing releases the flock
        self.fd = None


def recover_interrupted_builds() -> bool:
    """Where this torch's C++ extension loader locks builds with ``FileBaton`` (torch 2.11; newer torch locks
    them with a file lock itself), make it lock them with :class:`LockedBaton`. Returns whether it did. Call it
    before DeepSpeed builds an op (the training entry points do, first thing)."""
    import torch.utils.cpp_extension as cpp_extension

    if not hasattr(cpp_extension, "FileBaton"):
        return False
    cpp_extension.FileBaton = LockedBaton
    return True


# ---------------------------------------------------------------------------------- ZeRO-3 over gloo
# The first DeepSpeed whose ZeRO-3 all-gather waits for each of its gloo operations, not only the last.
ZERO3_GLOO_FIXED_IN = "0.19.8"


def zero3_on_gloo_problem(version: str | None = None) -> str | None:
    """Why ZeRO-3 on CPU processes (the gloo backend) would train on wrong weights with this DeepSpeed
    (``version``, or the installed one), with the fix; ``None`` when it would not. DeepSpeed 0.19.7 and older
    wait only for the last of a gather's gloo operations (on a GPU, NCCL's stream synchronisation covers the
    rest), so a gathered parameter can be read before its pieces arrive: seen as NaN logits and a logged loss
    of 0.0 on 2 CPU ranks, in most runs."""
    from importlib import metadata

    from packaging.version import Version

    if version is None:
        try:
            version = metadata.version("deepspeed")
        except metadata.PackageNotFoundError:
            return None
    if Version(version) >= Version(ZERO3_GLOO_FIXED_IN):
        return None
    return (
        f"DeepSpeed {version} gathers ZeRO-3 parameters over gloo (processes without a GPU) without waiting for "
        f"every piece, so the model would train on partly uninitialised weights. Install a newer one: "
        f"pip install 'deepspeed>={ZERO3_GLOO_FIXED_IN}'"
    )
