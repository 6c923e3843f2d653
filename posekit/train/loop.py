"""The shared training loop: any method (the AAE, the DeepIM refiner, ...) plugs in a :class:`TrainTask`.

What it gives every method:
  * atomic checkpoints every ``checkpoint_every`` steps (model, optimiser, step, loss history,
    RNG states, the task's own state) and ``resume=True`` to continue after a kill;
  * a tqdm progress bar on stderr with the loss and steps/s;
  * ``curves.png`` (loss curve) and ``samples.png`` (the task's picture of what it learns),
    refreshed while it trains;
  * several processes under ``torchrun``: with ``WORLD_SIZE > 1`` in the environment it joins a
    process group (NCCL on CUDA, Gloo on CPU), wraps the model in DistributedDataParallel, gives
    each rank its own random stream and its share of the batch, and lets only rank 0 write files.

A task owns its data: ``task.batch(step, ctx)`` draws one (per-rank) batch with ``ctx.generator``,
so that a resumed run draws from where the killed run stopped.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from posekit.errors import InputError
from posekit.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from posekit.train.curves import plot_loss_curve, save_image_grid

CHECKPOINT_NAME = "last.pt"


@dataclass
class TrainConfig:
    """How long and how to train, and where the files go (task-independent)."""

    out_dir: Path
    steps: int
    lr: float = 2e-4
    checkpoint_every: int = 500
    sample_every: int = 500
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    progress: bool = True
    grad_clip: float | None = None
    lr_schedule: str = "constant"  # "constant" | "cosine" (to lr_final_ratio * lr at the last step)
    lr_final_ratio: float = 0.05
    warmup_steps: int = 0
    threads: int | None = None  # torch.set_num_threads on CPU; None leaves torch's default

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.steps < 0:
            raise InputError(f"--steps must be >= 0, got {self.steps}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InputError(f"lr schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.checkpoint_every <= 0:
            raise InputError(f"checkpoint interval must be positive, got {self.checkpoint_every}")


@dataclass
class TrainContext:
    """What a task sees while training: where to put tensors, which rank it is, its random stream."""

    device: torch.device
    rank: int
    world_size: int
    generator: torch.Generator

    def share(self, batch_size: int) -> int:
        """This rank's part of a global batch of ``batch_size`` (the batch is split across ranks)."""
        return max(1, math.ceil(batch_size / self.world_size))


@runtime_checkable
class TrainTask(Protocol):
    """What a method provides to :func:`train`.

    ``model``: the nn.Module to optimise. ``batch``: draw one batch for this rank. ``loss``: the
    scalar to minimise for a batch plus named scalars to log. ``samples``: rows of images (each an
    (N, H, W, 3) array in [0, 1]) for samples.png, or None. ``state_dict`` / ``load_state_dict``:
    the task's own resumable state (may be empty).
    """

    model: torch.nn.Module

    def batch(self, step: int, ctx: TrainContext) -> Any: ...

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...

    def samples(self, model: torch.nn.Module, batch: Any) -> list[np.ndarray] | None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    """What :func:`train` leaves: the last step, the loss history and the files written."""

    step: int
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    curves: Path | None = None
    samples: Path | None = None
    resumed_from: int | None = None
    seconds: float = 0.0


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): linear warm-up, then constant or cosine decay.

    A pure function of the step, so a resumed run follows the same schedule without scheduler state.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine" and cfg.steps > cfg.warmup_steps:
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        lo = cfg.lr * cfg.lr_final_ratio
        return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * min(1.0, t)))
    return cfg.lr


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local rank> where CUDA is present, else cpu; 'cuda' without CUDA is an InputError."""
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise InputError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def distributed_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) in a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


#: the loss curve is first drawn after this many steps of a run (then at every checkpoint and sample)
FIRST_CURVE_STEPS = 20


def refuse_existing_checkpoint(out_dir: str | Path, resume: bool) -> None:
    """InputError when ``out_dir`` already holds a checkpoint and ``resume`` is off.

    Trainers call it before they write anything (render caches, config.json), so a refused run
    leaves the workspace exactly as it was.
    """
    ckpt_file = checkpoint_path(out_dir)
    if ckpt_file.is_file() and not resume:
        state = load_checkpoint(ckpt_file)
        raise InputError(
            f"{ckpt_file}: a checkpoint (step {state.get('step')}) is already there; "
            "pass --resume to continue it or choose another --out"
        )


def refuse_missing_checkpoint(out_dir: str | Path) -> None:
    """InputError for --resume where there is nothing to resume (a trainer's command would otherwise start afresh
    in silence; the loop itself allows it, for scripts that resume whatever is there)."""
    ckpt_file = checkpoint_path(out_dir)
    if not ckpt_file.is_file():
        raise InputError(f"{out_dir}: nothing to resume (no checkpoints/last.pt there); leave out --resume to start "
                         "a new run")


def checkpoint_path(out_dir: str | Path) -> Path:
    """Where :func:`train` keeps the last checkpoint of a workspace."""
    return Path(out_dir) / "checkpoints" / CHECKPOINT_NAME


def _rank_generator(device: torch.device, seed: int, rank: int, step: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) * 1_000_003 + rank * 7919 + step)
    return gen


def train(task: TrainTask, cfg: TrainConfig, optimizer: torch.optim.Optimizer | None = None) -> TrainResult:
    """Run ``task`` for ``cfg.steps`` optimiser steps in total (counting steps done before a resume)."""
    rank, world, local_rank = distributed_env()
    device = resolve_device(cfg.device, local_rank)
    if cfg.threads and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    is_main = rank == 0

    model = task.model.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ckpt_file = checkpoint_path(cfg.out_dir)
    result = TrainResult(step=0)
    generator = _rank_generator(device, cfg.seed, rank, 0)

    refuse_existing_checkpoint(cfg.out_dir, cfg.resume)
    if cfg.resume and ckpt_file.is_file():
        state = load_checkpoint(ckpt_file)  # on CPU: RNG states must be; load_state_dict moves the rest
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        result.step = int(state["step"])
        result.resumed_from = result.step
        result.steps = list(state["history"]["step"])
        result.losses = list(state["history"]["loss"])
        task.load_state_dict(state.get("task", {}))
        set_rng_state(state["rng"])
        if rank == 0 and state.get("generator") is not None and state.get("generator_device") == device.type:
            generator.set_state(state["generator"].cpu())
        else:  # other ranks (or another device type) get a fresh stream, distinct per step
            generator = _rank_generator(device, cfg.seed, rank, result.step)
        if is_main:
            print(f"resuming {ckpt_file} at step {result.step}", file=sys.stderr)
    elif cfg.resume and is_main:
        print(f"--resume: no checkpoint at {ckpt_file} yet, starting from step 0", file=sys.stderr)

    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    ctx = TrainContext(device=device, rank=rank, world_size=world, generator=generator)
    curves_file = cfg.out_dir / "curves.png"
    samples_file = cfg.out_dir / "samples.png"

    saved = [result.step if result.resumed_from is not None else -1]

    def write_checkpoint() -> None:
        if not is_main:
            return
        saved[0] = result.step
        save_checkpoint(
            ckpt_file,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": result.step,
                "history": {"step": result.steps, "loss": result.losses},
                "rng": rng_state(),
                "generator": ctx.generator.get_state(),
                "generator_device": device.type,
                "task": task.state_dict(),
                "config": {"lr": cfg.lr, "steps": cfg.steps, "seed": cfg.seed, "world_size": world},
            },
        )
        result.checkpoint = ckpt_file

    def write_curves() -> None:
        if is_main and result.steps:
            result.curves = plot_loss_curve(result.steps, result.losses, curves_file)

    def write_pictures(batch: Any) -> None:
        if not is_main:
            return
        write_curves()
        if batch is not None:
            model.eval()
            with torch.no_grad():
                rows = task.samples(model, batch)
            model.train()
            if rows:
                result.samples = save_image_grid(rows, samples_file, scale=2 if rows[0].shape[1] <= 64 else 1)

    t0 = time.perf_counter()
    bar = None
    if is_main and cfg.progress and result.step < cfg.steps:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=result.step, unit="step", file=sys.stderr, dynamic_ncols=True,
                   desc="train", smoothing=0.05)
    model.train()
    batch = None
    # Where an interrupt lands within a step decides what the Ctrl-C checkpoint holds, so that resuming
    # from it equals the uninterrupted run: before the optimiser step, the RNG states are rolled back to
    # the step's start; after it, the step's bookkeeping is completed.
    # A first Ctrl-C (SIGINT) only asks to stop: the loop finishes the step in hand and stops at the next
    # step boundary, where the checkpoint is exact. A second one stops at once (the phase logic below then
    # keeps the checkpoint as consistent as the interrupted step allows).
    phase, snapshot, step_before, local_loss = "done", None, result.step, float("nan")
    step_before_run = result.step
    stop_requested: list[bool] = []

    def on_sigint(signum, frame):
        if stop_requested:
            raise KeyboardInterrupt
        stop_requested.append(True)
        if is_main:
            print("\nposekit: stopping after this step (Ctrl-C again to stop now)", file=sys.stderr)

    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        while result.step < cfg.steps:
            if stop_requested:
                raise KeyboardInterrupt
            snapshot, step_before, phase = (ctx.generator.get_state(), rng_state()), result.step, "started"
            lr = learning_rate(cfg, result.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = task.batch(result.step, ctx)
            loss, extras = task.loss(net, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            phase, local_loss = "stepped", float(loss.detach())
            value = loss.detach()
            if world > 1:
                torch.distributed.all_reduce(value)
                value = value / world
            value = float(value)
            if not math.isfinite(value):
                raise RuntimeError(f"training diverged at step {result.step}: loss is {value}")
            result.step += 1
            result.steps.append(result.step)
            result.losses.append(value)
            phase = "done"
            if bar is not None:
                bar.update(1)
                if result.step % 5 == 0 or result.step == cfg.steps:
                    bar.set_postfix(loss=f"{value:.4g}", **{k: f"{v:.3g}" for k, v in extras.items()})
            if result.step % cfg.checkpoint_every == 0:
                write_checkpoint()
            if cfg.sample_every and result.step % cfg.sample_every == 0:
                write_pictures(batch)
            elif result.step == step_before_run + FIRST_CURVE_STEPS or result.step % cfg.checkpoint_every == 0:
                write_curves()  # a person sees the loss falling early, and at every checkpoint
    except KeyboardInterrupt:
        if phase == "started":  # the weights are untouched: undo the batch's draws from the RNGs
            ctx.generator.set_state(snapshot[0])
            set_rng_state(snapshot[1])
        elif phase == "stepped":  # the weights moved: count the step (once)
            while result.steps and result.steps[-1] > step_before:
                result.steps.pop()
                result.losses.pop()
            result.step = step_before + 1
            result.steps.append(result.step)
            result.losses.append(local_loss)
        write_checkpoint()  # keep what was learned; --resume continues exactly from here
        write_curves()
        if is_main:
            argv = [a for a in sys.argv[1:] if a != "--resume"]
            print(f"posekit: saved step {result.step} to {ckpt_file}; continue with: posekit {' '.join(argv)} --resume",
                  file=sys.stderr)
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - t0
    if saved[0] != result.step or not ckpt_file.is_file():
        write_checkpoint()
    if batch is None and is_main:  # resumed at the end already: still draw one batch for the picture
        batch = task.batch(result.step, ctx)
    write_pictures(batch)
    if world > 1:
        torch.distributed.barrier()
    return result

