"""One rank of the data-parallel SIREN check (run by test_two_ranks.py as a subprocess).

usage: python two_rank_child.py RANK WORLD_SIZE PORT MODEL_DIR WORK_DIR

WORLD_SIZE=1 plays the driver too: old-log-prob pass on the whole batch, the controller on the
whole batch (anchor, coefficient), then the update gradient. WORLD_SIZE=2: each rank receives its
half of the batch (verl's DP split: rank r gets rows [r*B/2, (r+1)*B/2)) and the driver's step
values, and computes the update gradient (FSDP averages it over the ranks).
"""

import json
import os
import sys

rank, world, port, model_dir, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
os.environ.update(
    RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
    MASTER_ADDR="127.0.0.1", MASTER_PORT=port, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
    OMP_NUM_THREADS="1",
)

import torch  # noqa: E402

from siren_verl.methods.config import parse_entropy_control, resolve  # noqa: E402
from siren_verl.methods.controller import EntropyController, StepInputs, regularizer_spec  # noqa: E402
from siren_verl.testing.verl_worker import build_actor, infer, make_rollout_batch, to_engine_input  # noqa: E402
from siren_verl.verl_glue.loss import SirenPPOLoss  # noqa: E402

B, MICRO = 8, 2
REQUEST = {"top_p": 0.8, "boundary": "exclusive", "chunk_size": None}
spec = resolve(parse_entropy_control({"method": "siren", "coef": 1.0, "peak_quantile": 0.5}))
handle = build_actor(model_dir, mini_batch_size=B, micro_batch_size=MICRO, use_remove_padding=False)
batch = make_rollout_batch(batch_size=B, response_len=8, seed=21, min_response_len=2)

if world == 1:
    out, _ = infer(handle, batch, siren_entropy=REQUEST)
    mask = batch.batch["response_mask"].bool()
    controller = EntropyController(spec)
    values = controller.observe(
        StepInputs(
            response_mask=mask,
            full_entropy=out["entropy"],
            nucleus_entropy=out["siren_nucleus_entropy"],
            nucleus_size=out["siren_nucleus_size"],
            advantages=batch.batch["advantages"],
        )
    )
    step = dict(values.scalars)
    old = out["log_probs"] * mask
    torch.save({"step": step, "old_log_probs": old}, os.path.join(work, "driver.pt"))
else:
    driver = torch.load(os.path.join(work, "driver.pt"))
    step, old = driver["step"], driver["old_log_probs"]

batch.batch["old_log_probs"] = old
rows = slice(rank * B // world, (rank + 1) * B // world)
shard = batch[rows]

received = []


class RecordingLoss(SirenPPOLoss):
    def __call__(self, model_output, data, dp_group=None):
        from verl.utils import tensordict_utils as tu

        received.append(dict(tu.get_non_tensor_data(data=data, key="siren_step", default=None)))
        return super().__call__(model_output, data, dp_group)


loss_fn = RecordingLoss(handle.actor_config, regularizer_spec(spec, "token-mean"))
engine = handle.worker.engine
td = to_engine_input(
    shard,
    calculate_entropy=True,
    compute_loss=True,
    global_batch_size=B,
    use_remove_padding=False,
    use_dynamic_bsz=False,
    micro_batch_size_per_gpu=MICRO,
    use_fused_kernels=False,
    siren_entropy=REQUEST,
    siren_step=step,
)
with engine.train_mode():
    engine.optimizer_zero_grad()
    output = engine.forward_backward_batch(td, loss_fn, forward_only=False)
    grads = {n: p.grad.full_tensor().detach().clone() for n, p in engine.module.named_parameters() if p.grad is not None}
torch.save(grads, os.path.join(work, f"grads_w{world}_r{rank}.pt"))
with open(os.path.join(work, f"received_w{world}_r{rank}.json"), "w") as f:
    json.dump({"received": received, "reg_loss": output["metrics"]["entropy/reg_loss"].aggregate()}, f)
torch.distributed.destroy_process_group()
