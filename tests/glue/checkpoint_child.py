"""Helpers for test_checkpoint.py, importable by the test and runnable as a fresh process.

A `SirenPPOTrainerSync` (the class verl's registry hands out for trainer_mode=siren_sync) is built
without its heavy __init__ and given stand-ins for what verl's own `_save_checkpoint` /
`_load_checkpoint` touch (actor worker group, dataloader): those two methods run for real, so the
checkpoint folder, the tracker file and the resume rules are verl's.

usage: python checkpoint_child.py resume CKPT_DIR OUT_JSON   (resume, observe one step, dump)
       python checkpoint_child.py hammer PATH                 (rewrite a state file until killed)
"""

import json
import os
import sys

import torch
from omegaconf import OmegaConf

from siren_verl.methods.config import parse_entropy_control, resolve
from siren_verl.methods.controller import EntropyController, StepInputs

METHOD = {"method": "aer", "aer": {"eta": 0.3}}


class _WorkerGroup:
    def __init__(self, fail_save=False):
        self.saved, self.loaded, self.fail_save = [], [], fail_save

    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        if self.fail_save:
            raise RuntimeError("killed while saving the actor")
        os.makedirs(local_path, exist_ok=True)
        self.saved.append(local_path)

    def load_checkpoint(self, local_path, hdfs_path=None, del_local_after_load=False):
        self.loaded.append(local_path)


class _Loader:
    def state_dict(self):
        return {"position": 7}

    def load_state_dict(self, state):
        self.state = state


def make_controller():
    return EntropyController(resolve(parse_entropy_control(METHOD)), actor_agg_mode="token-mean")


def step_inputs(k: int) -> StepInputs:
    g = torch.Generator().manual_seed(100 + k)
    B, T = 8, 6
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, -1] = torch.rand(B, generator=g) > 0.5
    full = torch.rand(B, T, generator=g, dtype=torch.float64) * (2.0 - 0.4 * k) + 0.01
    scores = (torch.rand(B, generator=g) > 0.5).double()
    return StepInputs(mask, full, None, None, torch.randn(B, T, generator=g, dtype=torch.float64), scores,
                      [f"q{i // 4}" for i in range(B)], step=k)


def make_trainer(ckpt_dir: str, fail_save: bool = False):
    import verl.trainer.ppo.v1 as v1

    cls = v1.get_trainer_cls("siren_sync")
    trainer = object.__new__(cls)  # no Ray, no workers: only what checkpointing touches
    trainer.config = OmegaConf.create(
        {
            "trainer": {
                "default_local_dir": ckpt_dir,
                "resume_mode": "auto",
                "resume_from_path": None,
                "default_hdfs_dir": None,
                "del_local_ckpt_after_load": False,
                "max_actor_ckpt_to_keep": None,
            },
            "actor_rollout_ref": {"actor": {"checkpoint": {"async_save": False}}},
        }
    )
    from verl.trainer.ppo.checkpoint_callback import CheckpointCallback

    trainer.checkpoint_callback = CheckpointCallback(config=trainer.config)
    trainer.actor_rollout_wg = _WorkerGroup(fail_save)
    trainer.use_critic = False
    trainer.trainer_mode = "sync"
    trainer.train_dataloader = _Loader()
    trainer.entropy_controller = make_controller()
    trainer.global_steps = 0
    return trainer


def dump(controller, values) -> dict:
    return {
        "state": controller.state_dict(),
        "scalars": values.scalars,
        "metrics": values.metrics,
        "sample_coef": values.sample_coef.tolist(),
    }


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "resume":
        ckpt_dir, out = sys.argv[2], sys.argv[3]
        trainer = make_trainer(ckpt_dir)
        trainer._load_checkpoint()
        values = trainer.entropy_controller.observe(step_inputs(trainer.global_steps))
        with open(out, "w") as f:
            json.dump({"global_steps": trainer.global_steps, **dump(trainer.entropy_controller, values)}, f)
    elif mode == "hammer":
        from siren_verl.verl_glue.trainer import write_state_atomically

        path, i = sys.argv[2], 0
        payload = "x" * 200_000  # big enough that a torn write would be visible
        while True:
            write_state_atomically(path, {"counter": i, "payload": payload, "check": i * 7})
            i += 1
