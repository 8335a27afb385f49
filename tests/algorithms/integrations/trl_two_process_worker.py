"""One process of tests/test_integrations_trl.py's two-process run (launched by torchrun).

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/algorithms/integrations/trl_two_process_worker.py MODEL_DIR OUT_DIR
Trains three steps of ReweightedGRPOTrainer + HA-DW with 6 completions per process in groups of 4,
then writes OUT_DIR/rank{R}.pt: this process's reweighted advantages per step and the reweighter state.
"""

import sys

import torch

from experiments.parallel.launch import end_process
from tests.algorithms.integrations.test_integrations_trl import make_trainer


def main(model_dir: str, out_dir: str) -> None:
    trainer = make_trainer(model_dir, out_dir, max_steps=3, save_steps=100, per_device_train_batch_size=6)
    trainer.train()
    torch.save({"generated": trainer.generated, "state": trainer.reweighter.state_dict()},
               f"{out_dir}/rank{trainer.accelerator.process_index}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    end_process(0)  # no interpreter finalization: gloo's threads outlive the process group (experiments.parallel.launch)
