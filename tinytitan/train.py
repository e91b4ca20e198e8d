"""Entry point of each training process: ``torchrun ... -m tinytitan.train --job.config_file X``.

It differs from ``-m torchtitan.train`` only in switching torchtitan to the CPU
when there is no accelerator and in using ``TinyTrainer``.
"""

from tinytitan import device


def main() -> None:
    device.activate()
    from torchtitan.train import main as torchtitan_main

    import tinytitan.register  # noqa: F401  (registers the TrainSpec)
    from tinytitan.trainer import TinyTrainer

    torchtitan_main(TinyTrainer)


if __name__ == "__main__":
    main()
