"""Entry point of each training process: ``torchrun ... -m tinytitan.rank.main --job.config_file X``.

It differs from ``-m torchtitan.train`` in switching torchtitan to the CPU when there is
no accelerator, in using ``TinyTrainer``, and in its fault handling: the rank dies with
torchrun (parent-death signal), turns SIGTERM/SIGUSR1 into a preemption checkpoint, dumps
its threads' stacks on SIGUSR2 (the launcher asks for them when the rank hangs), stops
quietly on SIGINT (Ctrl-C: the launcher says how to resume), and reports a
``TinytitanError`` as one line (through the launcher's notes when it has one).
"""

import os
import signal
import sys

from tinytitan.errors import TinytitanError
from tinytitan.processes import RankFailure
from tinytitan.run import faults

if __name__ == "__main__":
    # First, before the slow imports: a killed launcher leaves nothing behind. Only in the rank
    # itself: a spawned data loader worker re-imports this module as __mp_main__, and must
    # neither die here (its parent is the rank, not torchrun) nor import torch.
    faults.rank_dies_with_torchrun()


def main() -> None:
    from tinytitan.rank import device, known_warnings
    from tinytitan.rank.preemption import StopRequest

    stop = StopRequest()
    stop.install()
    rank = int(os.environ.get("RANK", "0"))
    faults.note_rank(rank)
    faults.dump_stacks_on_signal(rank)
    signal.signal(signal.SIGINT, _exit_interrupted)
    device.activate()
    known_warnings.install(cpu=device.cpu_mode())
    from torchtitan.train import main as torchtitan_main

    from tinytitan.rank.spec import register
    from tinytitan.rank.trainer import TinyTrainer

    register()  # also done by the config's custom_import (tinytitan.register), which torchtitan runs later

    TinyTrainer.stop_request = stop
    try:
        torchtitan_main(TinyTrainer)
    except TinytitanError as e:
        if faults.notes_dir() is not None:
            faults.note_error(rank, str(e))  # the launcher prints it once for all ranks
        else:
            print(f"tinytitan: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except RankFailure as e:  # its message names the cause: the launcher says it, without a traceback
        if faults.notes_dir() is None:
            print(f"tinytitan: rank {rank}: {e}", file=sys.stderr, flush=True)
        faults.note_crash(rank, e)
        sys.exit(1)
    except Exception as e:
        faults.note_crash(rank, e)  # the launcher's failure line names it; the traceback follows here
        raise


def _exit_interrupted(_signum, _frame) -> None:
    """SIGINT (torchrun forwards the launcher's Ctrl-C): stop at once, as KeyboardInterrupt would,
    but without its traceback from every rank; the launcher says once how to resume."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, RuntimeError, ValueError):  # RuntimeError: the signal came in the middle of a write
            pass
    os._exit(128 + signal.SIGINT)  # no interpreter shutdown: it would join threads and wait for saves


if __name__ == "__main__":
    main()
