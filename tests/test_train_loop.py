"""The shared training loop: deterministic resume, refusal to overwrite, files a person looks at, kill + resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from posekit.errors import InputError
from posekit.train.checkpoint import load_checkpoint, save_checkpoint
from posekit.train.loop import TrainConfig, TrainContext, checkpoint_path, train

TOY = textwrap.dedent(
    """
    import time
    import numpy as np
    import torch

    class ToyTask:
        '''Fit y = A x with a random A fixed by the seed; batches drawn from the loop's generator.'''

        def __init__(self, delay=0.0):
            torch.manual_seed(0)
            self.model = torch.nn.Linear(8, 4)
            self.A = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
            self.delay = delay

        def batch(self, step, ctx):
            x = torch.randn(ctx.share(16), 8, generator=ctx.generator, device=ctx.device)
            return x, x @ self.A.T.to(ctx.device)

        def loss(self, model, batch):
            if self.delay:
                time.sleep(self.delay)
            x, y = batch
            return ((model(x) - y) ** 2).mean(), {}

        def samples(self, model, batch):
            x, y = batch
            img = (torch.sigmoid(model(x)[:4]).view(4, 2, 2, 1).expand(4, 2, 2, 3)).cpu().numpy()
            return [img, img]

        def state_dict(self):
            return {"A": self.A}

        def load_state_dict(self, state):
            pass
    """
)
_ns: dict = {}
exec(TOY, _ns)  # noqa: S102 - the same toy task in-process and in the subprocess below
ToyTask = _ns["ToyTask"]


def _cfg(out: Path, steps: int, resume: bool = False, every: int = 10, pictures: int = 0) -> TrainConfig:
    return TrainConfig(out_dir=out, steps=steps, lr=0.05, checkpoint_every=every, sample_every=pictures, device="cpu",
                       resume=resume, progress=False, threads=1)


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    full = train(ToyTask(), _cfg(tmp_path / "full", 40))
    assert full.step == 40 and len(full.losses) == 40
    assert full.losses[-1] < 0.2 * full.losses[0]  # it learns

    part = train(ToyTask(), _cfg(tmp_path / "part", 25))
    assert part.step == 25
    resumed = train(ToyTask(), _cfg(tmp_path / "part", 40, resume=True, pictures=30))
    assert resumed.resumed_from == 25 and resumed.step == 40
    # Same batches, same weights: the resumed run's history is the uninterrupted one.
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-5)
    for name in ("curves.png", "samples.png"):
        assert (tmp_path / "part" / name).stat().st_size > 0
    state = load_checkpoint(checkpoint_path(tmp_path / "part"))
    assert state["step"] == 40 and len(state["history"]["loss"]) == 40


def test_ctrl_c_stops_at_a_step_boundary_and_resumes_exactly(tmp_path, capsys):
    """Ctrl-C (SIGINT) mid-step finishes that step, saves, and --resume reproduces the uninterrupted run."""
    import os
    import signal

    full = train(ToyTask(), _cfg(tmp_path / "full", 30))

    class Interrupted(ToyTask):
        calls = 0

        def loss(self, model, batch):
            self.calls += 1
            if self.calls == 17:  # the user presses Ctrl-C during step 17
                os.kill(os.getpid(), signal.SIGINT)
            return super().loss(model, batch)

    with pytest.raises(KeyboardInterrupt):
        train(Interrupted(), _cfg(tmp_path / "part", 30, every=1000))
    assert load_checkpoint(checkpoint_path(tmp_path / "part"))["step"] == 17
    said = capsys.readouterr().err
    assert f"saved step 17 to {checkpoint_path(tmp_path / 'part')}" in said and "--resume" in said
    resumed = train(ToyTask(), _cfg(tmp_path / "part", 30, resume=True))
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-5)


def test_existing_checkpoint_is_not_overwritten_without_resume(tmp_path):
    train(ToyTask(), _cfg(tmp_path, 5))
    before = checkpoint_path(tmp_path).read_bytes()
    with pytest.raises(InputError, match="--resume"):
        train(ToyTask(), _cfg(tmp_path, 5))
    assert checkpoint_path(tmp_path).read_bytes() == before


def test_resume_without_checkpoint_starts_from_zero(tmp_path):
    res = train(ToyTask(), _cfg(tmp_path, 3, resume=True))
    assert res.resumed_from is None and res.step == 3


def test_unreadable_checkpoint_names_the_file(tmp_path):
    ckpt = checkpoint_path(tmp_path)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=str(ckpt)):
        train(ToyTask(), _cfg(tmp_path, 3, resume=True))


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 1  # the old file is intact


def test_context_splits_the_batch():
    ctx = TrainContext(device=torch.device("cpu"), rank=1, world_size=4, generator=torch.Generator())
    assert ctx.share(64) == 16 and ctx.share(3) == 1


def test_sigkill_then_resume(tmp_path):
    """A training process killed with SIGKILL after a checkpoint continues from that checkpoint's step."""
    script = TOY + textwrap.dedent(
        f"""
        import sys
        from posekit.train.loop import TrainConfig, train
        resume = sys.argv[1] == "resume"
        delay = 0.0 if resume else 0.05
        res = train(ToyTask(delay), TrainConfig(out_dir={str(tmp_path)!r}, steps=60, lr=0.05, checkpoint_every=10,
                                                 sample_every=0, device="cpu", resume=resume, progress=False,
                                                 threads=1))
        print("STEP", res.step, "FROM", res.resumed_from, "N", len(res.losses))
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script, "fresh"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    ckpt = checkpoint_path(tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and load_checkpoint(ckpt)["step"] >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(ckpt)["step"]
    assert 20 <= saved < 60 and saved % 10 == 0
    out = subprocess.run([sys.executable, "-c", script, "resume"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"STEP 60 FROM {saved} N 60" in out.stdout
    assert not list(ckpt.parent.glob("*.tmp"))


def test_learning_rate_schedule():
    from posekit.train.loop import learning_rate

    cfg = TrainConfig(out_dir=Path("."), steps=100, lr=1.0, lr_schedule="cosine", lr_final_ratio=0.1, warmup_steps=10)
    lrs = [learning_rate(cfg, s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert (np.diff(lrs[9:]) <= 1e-12).all()  # non-increasing after the warm-up
    assert learning_rate(cfg, 100) == pytest.approx(0.1)
    assert learning_rate(TrainConfig(out_dir=Path("."), steps=5, lr=0.3), 4) == 0.3
    with pytest.raises(InputError):
        TrainConfig(out_dir=Path("."), steps=5, lr_schedule="step")


def test_loss_curve_appears_early_before_any_checkpoint_or_sample(tmp_path):
    """A person looks at curves.png while it trains: it is drawn after a few steps, not only at checkpoints."""
    from posekit.train.loop import FIRST_CURVE_STEPS

    seen = {}

    class Watched(ToyTask):
        def batch(self, step, ctx):
            seen.setdefault(step, (tmp_path / "curves.png").is_file())
            return super().batch(step, ctx)

    train(Watched(), _cfg(tmp_path, FIRST_CURVE_STEPS + 5, every=1000, pictures=0))
    assert not seen[FIRST_CURVE_STEPS - 1] and seen[FIRST_CURVE_STEPS + 1]
