"""The FID sample set is the same on any number of ranks and at any batch size: image i comes from its own seed
(seed, i), as EDM2's ``--seeds=0-49999``. One checkpoint is evaluated by the FID callback in one process at two
batch sizes, and by a real 2-rank gloo DDP evaluation under torchrun: the uint8 images are identical and so is
the FID (the features are gathered in another order only if sharding were wrong; tolerance rel 1e-6 for float
round-off). Before per-image seeds, rank r drew its shard from a generator seeded by (seed, r)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_lab.cli.train import train
from ddpm_lab.diffusion import GaussianDiffusion, make_beta_schedule
from ddpm_lab.diffusion.noise import per_sample_generators
from ddpm_lab.lightning.fid_callback import SAMPLE_SEEDS
from tests.conftest import FAST_TRAINER, TINY_UNET, compose_config

EVALUATE = """
import json, sys
from pathlib import Path
import lightning as L
import numpy as np
from ddpm_lab.cli.builders import build_datamodule, module_from_checkpoint
from ddpm_lab.lightning.evaluation import EvaluateAtValidationEnd
from ddpm_lab.lightning import FIDCallback

ckpt, weights, cache, out, devices, *batch_sizes = sys.argv[1:]
module, run_cfg = module_from_checkpoint(ckpt)
for batch_size in batch_sizes:  # one process, one evaluation per batch size
    folder = Path(out) / f"b{batch_size}"
    fid = FIDCallback(every_n_steps=None, num_samples=7, batch_size=int(batch_size), steps=3, reference_num_images=20,
                      inception_weights=weights, cache_dir=cache, save_samples=True, output_dir=folder,
                      progress=False, bootstrap=0, seed=5)
    ddp = int(devices) > 1
    trainer = L.Trainer(accelerator="cpu", devices=int(devices), strategy="ddp" if ddp else "auto", logger=False,
                        callbacks=[fid, EvaluateAtValidationEnd()], limit_val_batches=1, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.validate(module, datamodule=build_datamodule(run_cfg), verbose=False)
    if trainer.global_rank == 0:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        record = {"metrics": metrics, "world_size": trainer.world_size, "protocol": fid.last_protocol}
        json.dump(record, open(folder / "result.json", "w"), default=str)
"""


def evaluations(tmp_path: Path, name: str, ckpt: Path, weights: Path, ranks: int, batch_sizes: list[int]):
    """{batch size: (uint8 images, record)} from one process (or one torchrun launch of ``ranks`` ranks)."""
    out = tmp_path / name
    script = tmp_path / "evaluate_fid.py"
    script.write_text(EVALUATE)
    args = [str(ckpt), str(weights), str(tmp_path / "cache"), str(out), str(ranks), *map(str, batch_sizes)]
    launch = [sys.executable]
    if ranks > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launch, str(script), *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = {}
    for batch_size in batch_sizes:
        folder = out / f"b{batch_size}"
        (npz,) = folder.glob("fid_samples_step_*.npz")
        found[batch_size] = np.load(npz)["images"], json.loads((folder / "result.json").read_text())
    return found


@pytest.mark.slow
def test_one_process_two_ranks_and_two_batch_sizes_give_the_same_images_and_fid(tmp_path, inception_weights):
    train(compose_config("train", tmp_path, [*FAST_TRAINER, *TINY_UNET, "logger=csv"]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    one_process = evaluations(tmp_path, "single", ckpt, inception_weights, ranks=1, batch_sizes=[7, 3])
    (single, one), (smaller, two) = one_process[7], one_process[3]
    ddp, three = evaluations(tmp_path, "ddp", ckpt, inception_weights, ranks=2, batch_sizes=[2])[2]
    assert three["world_size"] == 2 and three["protocol"]["world_size"] == 2
    assert one["protocol"]["sample_seeds"] == three["protocol"]["sample_seeds"] == SAMPLE_SEEDS
    assert single.shape == (7, 1, 16, 16) and len({image.tobytes() for image in single}) == 7
    np.testing.assert_array_equal(single, smaller)
    np.testing.assert_array_equal(single, ddp)
    for other in (two, three):
        for key in ("val/fid", "val/kid_mean", "val/is", "val/precision", "val/recall"):
            assert other["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-6), key


def test_per_example_generators_make_samples_independent_of_the_batch():
    """The sampling core with one generator per example: example i's sample depends on seed (base, i) only,
    for ancestral DDPM (fresh noise every step) and a stochastic solver."""
    diffusion = GaussianDiffusion(make_beta_schedule("linear", 20))

    def model(x, t):
        return 0.5 * x  # any deterministic network

    for sampler in ("ddpm", "euler_ancestral"):
        whole = diffusion.sample(
            model, (6, 3), sampler=sampler, steps=5, eta=1.0, generator=per_sample_generators(7, range(6), "cpu")
        )
        parts = [
            diffusion.sample(
                model, (len(idx), 3), sampler=sampler, steps=5, eta=1.0, generator=per_sample_generators(7, idx, "cpu")
            )
            for idx in (range(0, 2), range(2, 5), range(5, 6))
        ]
        torch.testing.assert_close(whole, torch.cat(parts), rtol=0, atol=0)
        other_base = diffusion.sample(
            model, (6, 3), sampler=sampler, steps=5, eta=1.0, generator=per_sample_generators(8, range(6), "cpu")
        )
        assert not torch.allclose(whole, other_base)
    with pytest.raises(ValueError, match="one per example"):
        diffusion.sample(model, (3, 3), generator=per_sample_generators(0, range(2), "cpu"))
