"""The trainer sends verl's actor/reference workers only a batch's tensor fields (and
`multi_modal_inputs` for a model with a processor; a text model's rows hold an empty dict there)
(`siren_trainer.worker_fields`): verl's real TrainingWorker computes exactly the same log-probs,
entropies, update metrics and updated weights from those fields as from every field the agent loop
stores (the dataset row and the agent loop's records included).

Which fields a step sends, and that the batch names every field again afterwards, is checked on the
step itself in test_trainer_step.py.
"""

import pytest
import torch

from siren_verl.testing.verl_worker import build_actor, engine_state, make_rollout_batch

# the per-row non-tensor records verl's agent loop stores with every response (agent_loop_tq.py:
# the dataset row's columns and AgentLoopOutput's bookkeeping), one value per row
RECORDS = {
    "data_source": lambda i: "toy",
    "ability": lambda i: "math",
    "prompt": lambda i: [{"role": "user", "content": f"{i} + {i} ="}],
    "raw_prompt": lambda i: [{"role": "user", "content": f"{i} + {i} ="}],
    "reward_model": lambda i: {"ground_truth": str(2 * i), "style": "rule"},
    "extra_info": lambda i: {"index": i, "split": "train"},
    "index": lambda i: i,
    "uid": lambda i: f"q{i // 2}",
    "session_id": lambda i: i % 2,
    "global_steps": lambda i: 1,
    "num_turns": lambda i: 2,
    "tools_kwargs": lambda i: {},
    "interaction_kwargs": lambda i: {},
    "extra_fields": lambda i: {"reward_extra_info": {"acc": float(i % 2)}, "min_global_steps": 1},
    "metrics": lambda i: {"generate_sequences": 0.01 * i, "tool_calls": 0.0},
    "multi_modal_inputs": lambda i: {},
}


def _stored_rows(batch):
    """The rows as TransferQueue stores them: verl's no-padding tensors plus the records."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    td = left_right_2_no_padding(batch.to_tensordict())
    for key, value in RECORDS.items():
        tu.assign_non_tensor_stack(td, key, [value(i) for i in range(len(batch))])
    return td


def _sent_rows(rows, multi_modal=False):
    from transfer_queue.metadata import extract_field_schema

    from siren_verl.verl_glue.siren_trainer import worker_fields

    kept = worker_fields(extract_field_schema(rows), multi_modal=multi_modal)
    assert not set(kept) & (set(RECORDS) - {"multi_modal_inputs"})
    assert ("multi_modal_inputs" in kept) == multi_modal
    assert {"input_ids", "position_ids", "responses", "response_mask", "advantages"} <= set(kept)
    return rows.select(*kept)


def _with_meta(rows, **meta):
    from verl.utils import tensordict_utils as tu

    td = rows.clone()
    tu.assign_non_tensor(td, **meta)
    return td


@pytest.fixture(scope="module")
def two_actors(tiny_model_dir, dist_env):
    """Two identical actors (same weights, same optimizer state): one trained on every field, one on
    the fields it is sent."""
    return [build_actor(tiny_model_dir, mini_batch_size=8, micro_batch_size=4) for _ in range(2)]


@pytest.mark.parametrize("multi_modal", [False, True])
def test_log_probs_and_entropy_equal_with_the_fields_sent(two_actors, multi_modal):
    actor = two_actors[0]
    batch = make_rollout_batch(batch_size=8, response_len=7, seed=21)
    rows = _stored_rows(batch)
    meta = dict(calculate_entropy=True, compute_loss=False, temperature=1.0)
    full = actor.worker.infer_batch(_with_meta(rows, **meta))
    sent = actor.worker.infer_batch(_with_meta(_sent_rows(rows, multi_modal), **meta))
    for key in ("log_probs", "entropy"):
        a, b = full[key], sent[key]
        assert a.is_nested and torch.equal(a.values(), b.values()) and torch.equal(a.offsets(), b.offsets()), key


def test_update_equal_with_the_fields_sent(two_actors):
    from verl.utils import tensordict_utils as tu

    full_actor, sent_actor = two_actors
    before = engine_state(full_actor)
    assert all(torch.equal(before[k], v) for k, v in engine_state(sent_actor).items())
    batch = make_rollout_batch(batch_size=8, response_len=7, seed=22)
    batch.batch["old_log_probs"] = -torch.rand(batch.batch["responses"].shape) * batch.batch["response_mask"]
    rows = _stored_rows(batch)
    meta = dict(
        calculate_entropy=True, compute_loss=True, temperature=1.0, global_batch_size=8, mini_batch_size=8,
        epochs=1, seed=0, dataloader_kwargs={"shuffle": False},
    )  # fmt: skip
    metrics_full = tu.get(full_actor.worker.train_mini_batch(_with_meta(rows, **meta)), "metrics")
    metrics_sent = tu.get(sent_actor.worker.train_mini_batch(_with_meta(_sent_rows(rows), **meta)), "metrics")
    def learning(metrics):  # (not time or memory)
        return {k: v for k, v in metrics.items() if k != "mfu" and not k.startswith("perf/")}

    assert "actor/pg_loss" in metrics_full and learning(metrics_full) == learning(metrics_sent)
    after_full, after_sent = engine_state(full_actor), engine_state(sent_actor)
    assert after_full.keys() == after_sent.keys()
    assert all(torch.equal(after_full[k], after_sent[k]) for k in after_full)
    assert any(not torch.equal(after_full[k], before[k]) for k in before)  # the update moved the weights
