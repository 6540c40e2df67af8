"""Entry point of DDP ranks > 0 started by ``ddp_launch``: run the job from rank 0's resolved config."""

from __future__ import annotations

import sys

from omegaconf import OmegaConf


def main() -> None:
    from .train import train

    train(OmegaConf.load(sys.argv[1]))


if __name__ == "__main__":
    main()
