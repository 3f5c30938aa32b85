"""siren_sync's training step (`SirenPPOTrainerSync._update_actor`) on a stand-in TransferQueue:

* fetch: ONE read of the batch per step, every field the step needs (the controller's inputs, the
  nucleus outputs, the rollout IS weights, the reward flags, the responses on a report step);
* observe: the controller sees the real rows (verl's padding row removed) padded to the longest
  response, the engine's nucleus outputs cut to the response as verl cuts log-probs, the sequence
  score the sum of `rm_scores`;
* write: the controller's values come back for every row (padding rows neutral) in one write, and
  its scalars travel to the workers as batch metadata, removed again after the update;

each checked against tensors built by hand from the same per-row lists (float64).
"""

import json
import types

import pytest
import torch
from omegaconf import OmegaConf

from siren_verl.methods.config import parse_entropy_control, resolve
from siren_verl.methods.controller import StepValues
from siren_verl.verl_glue.engine import NUCLEUS_ENTROPY, NUCLEUS_SIZE, SIREN_ENTROPY_KEY
from siren_verl.verl_glue.loss import SAMPLE_COEF, SIREN_STEP_KEY, TOKEN_MASK

RESPONSE_LENS = [3, 2, 1, 4]
PROMPT_LENS = [2, 3, 2, 1]
PADDING_ROW = 2  # verl's synthetic padding row (tag is_padding)
REAL = [0, 1, 3]
WIDTH = max(RESPONSE_LENS)
SCALARS = {"coef": 0.25, "anchor": 1.5}


def _rows(seed, lens, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)).tolist() for n in lens]


def _nested(rows, dtype=torch.float32):
    return torch.nested.as_nested_tensor([torch.tensor(r, dtype=dtype) for r in rows], layout=torch.jagged)


def _padded64(rows, fill=0.0):
    out = torch.full((len(rows), WIDTH), fill, dtype=torch.float64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32).double()  # the stored (float32) values
    return out


class _Controller:
    """Records what it observes and answers fixed values (the step plumbing, not a method's maths)."""

    def __init__(self):
        g = torch.Generator().manual_seed(7)
        n = len(REAL)
        self.seen = []
        self.values = StepValues(
            scalars=dict(SCALARS),
            sample_coef=torch.rand(n, generator=g, dtype=torch.float64),
            token_mask=(torch.rand(n, WIDTH, generator=g) > 0.5).double(),
            token_weights=torch.rand(n, WIDTH, generator=g, dtype=torch.float64) + 0.5,
            advantages=torch.randn(n, WIDTH, generator=g, dtype=torch.float64),
            metrics={"entropy/full_mean": 0.75},
        )

    def observe(self, inputs):
        self.seen.append(inputs)
        return self.values


class _TransferQueue:
    """kv_batch_get / kv_batch_put over one TensorDict; counts the reads."""

    def __init__(self, store):
        self.store, self.reads, self.writes = store, [], []

    def kv_batch_get(self, keys, partition_id, select_fields):
        self.reads.append(list(select_fields))
        return self.store.select(*select_fields)

    def kv_batch_put(self, keys, partition_id, fields):
        from transfer_queue.metadata import KVBatchMeta

        self.writes.append(fields)
        # as TransferQueue's: the returned metadata names every stored field of the rows
        stored = list(self.store.keys()) + [k for k in fields.keys() if k not in self.store.keys()]
        return KVBatchMeta(keys=list(keys), tags=[{}] * len(keys), partition_id=partition_id, fields=stored)

    def get_client(self):
        return self

    def kv_retrieve_meta(self, keys, partition_id, create=False):
        from transfer_queue.metadata import extract_field_schema

        return types.SimpleNamespace(field_schema=extract_field_schema(self.store))


def _step_store():
    from tensordict import NonTensorData, NonTensorStack, TensorDict

    raw = {
        "response_mask": [[1.0] * n for n in RESPONSE_LENS],
        "entropy": _rows(1, RESPONSE_LENS, 0.0, 3.0),
        "advantages": _rows(2, RESPONSE_LENS, -1.0, 1.0),
        "rm_scores": [[0.0] * (n - 1) + [float(i % 2)] for i, n in enumerate(RESPONSE_LENS)],
        "rollout_is_weights": _rows(3, RESPONSE_LENS, 0.5, 1.5),
        # the engine's outputs cover prompt + response
        NUCLEUS_ENTROPY: _rows(4, [p + r for p, r in zip(PROMPT_LENS, RESPONSE_LENS, strict=True)], 0.0, 2.0),
        NUCLEUS_SIZE: [[float(k % 5 + 1) for k in range(p + r)] for p, r in zip(PROMPT_LENS, RESPONSE_LENS, strict=True)],
        "responses": [[10 * i + k for k in range(n)] for i, n in enumerate(RESPONSE_LENS)],
    }
    store = TensorDict(
        {k: _nested(v, torch.long if k == "responses" else torch.float32) for k, v in raw.items()},
        batch_size=[len(RESPONSE_LENS)],
    )
    store["uid"] = NonTensorStack(*(NonTensorData(u) for u in ["q0", "q0", "pad", "q1"]))
    flags = [(False, True), (True, False), (True, True), (True, True)]  # the padding row's must not count
    store["extra_fields"] = NonTensorStack(
        *(NonTensorData({"reward_extra_info": {"reward_timeout": t, "reward_parse_failure": p}}) for t, p in flags)
    )
    # the dataset row and the engine's one non-tensor input, as the agent loop stores them
    store["reward_model"] = NonTensorStack(*(NonTensorData({"ground_truth": str(i)}) for i in range(len(flags))))
    store["multi_modal_inputs"] = NonTensorStack(*(NonTensorData({}) for _ in flags))
    return raw, store


def _trainer(tmp_path, method, every_n_steps=1):
    import verl.trainer.ppo.v1 as v1  # its import hook loads the trainer module

    cls = v1.get_trainer_cls("siren_sync")
    trainer = object.__new__(cls)  # no Ray, no workers: only what the step touches
    spec = {"method": method, "forking_report": {"every_n_steps": every_n_steps, "top_n": 3}}
    trainer.entropy_spec = resolve(parse_entropy_control(spec))
    trainer.entropy_controller = _Controller()
    trainer.global_steps = 3
    trainer.steps_per_epoch = 2
    trainer.tokenizer = types.SimpleNamespace(decode=lambda ids: " ".join(f"t{i}" for i in ids))
    trainer.processor = None  # a text model
    trainer.config = OmegaConf.create({"trainer": {"project_name": "p", "experiment_name": "e"}})
    return trainer


@pytest.fixture
def patched(monkeypatch, tmp_path):
    """The stand-in TransferQueue in the trainer module, and verl's own `_update_actor` (the workers'
    update) replaced by a recorder of the metadata it is sent."""
    import verl.trainer.ppo.v1  # noqa: F401  (loads the trainer module through its hook)
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    import siren_verl.verl_glue.siren_trainer as module

    raw, store = _step_store()
    queue = _TransferQueue(store)
    monkeypatch.setattr(module, "tq", queue)
    sent = []

    def update_actor(self, batch, metrics):
        sent.append(dict(batch.extra_info, fields=list(batch.fields)))
        metrics.update({"actor/entropy/siren_term": 0.5, "actor/pg_loss": -0.1})
        return batch

    monkeypatch.setattr(PPOTrainer, "_update_actor", update_actor)
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", str(tmp_path))
    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    return types.SimpleNamespace(raw=raw, queue=queue, sent=sent)


def _batch(fields):
    from transfer_queue.metadata import KVBatchMeta

    tags = [{"is_padding": i == PADDING_ROW} for i in range(len(RESPONSE_LENS))]
    return KVBatchMeta(keys=[f"k{i}" for i in range(len(tags))], tags=tags, partition_id="train", fields=fields)


def test_one_read_observes_the_real_rows_and_writes_every_row(patched, tmp_path):
    trainer = _trainer(tmp_path, "siren")
    raw, queue = patched.raw, patched.queue
    metrics = {}
    batch = _batch(list(queue.store.keys()))
    out = trainer._update_actor(batch, metrics)

    # fetch: one read, every field the step needs
    assert len(queue.reads) == 1
    assert sorted(queue.reads[0]) == sorted(
        ["response_mask", "entropy", "advantages", "rm_scores", "uid", NUCLEUS_ENTROPY, NUCLEUS_SIZE,
         "rollout_is_weights", "extra_fields", "responses"]
    )

    # observe: the real rows, padded to the longest response
    (inputs,) = trainer.entropy_controller.seen
    mask = _padded64(raw["response_mask"])[REAL]
    assert torch.equal(inputs.response_mask, mask.bool())
    assert torch.equal(inputs.full_entropy.double(), _padded64(raw["entropy"])[REAL])
    assert torch.equal(inputs.advantages.double(), _padded64(raw["advantages"])[REAL])
    assert torch.equal(inputs.scores.double(), torch.tensor([float(i % 2) for i in REAL], dtype=torch.float64))
    # verl's response cut of a prompt+response output: positions P-1 .. P+R-2 (left shift by one)
    cut = {key: [raw[key][i][p - 1 : p - 1 + r] for i, (p, r) in enumerate(zip(PROMPT_LENS, RESPONSE_LENS, strict=True))]
           for key in (NUCLEUS_ENTROPY, NUCLEUS_SIZE)}
    assert torch.equal(inputs.nucleus_entropy.double(), _padded64(cut[NUCLEUS_ENTROPY])[REAL])
    assert torch.equal(inputs.nucleus_size.double(), _padded64(cut[NUCLEUS_SIZE])[REAL])
    assert inputs.uids == ["q0", "q0", "q1"]
    assert (inputs.step, inputs.epoch) == (2, 1)  # global step 3 -> 0-based step 2, 2 steps per epoch

    # write: one write, every row; real rows carry the controller's values, the padding row neutral ones
    values = trainer.entropy_controller.values
    (written,) = queue.writes
    assert set(written.keys()) == {"advantages", "rollout_is_weights", SAMPLE_COEF, TOKEN_MASK}
    for key in ("advantages", "rollout_is_weights", TOKEN_MASK):
        assert written[key].offsets().diff().tolist() == RESPONSE_LENS, key  # nested like response_mask

    def padded(key):
        return torch.nested.to_padded_tensor(written[key], 0.0).double()

    valid = _padded64(raw["response_mask"]).bool()
    expected_adv = _padded64(raw["advantages"])
    expected_adv[REAL] = values.advantages.float().double()
    assert torch.equal(padded("advantages")[valid], expected_adv[valid])
    weights = torch.ones(len(RESPONSE_LENS), WIDTH, dtype=torch.float64)
    weights[REAL] = values.token_weights.float().double()
    expected_w = weights * _padded64(raw["rollout_is_weights"])
    torch.testing.assert_close(padded("rollout_is_weights")[valid], expected_w[valid], rtol=1e-6, atol=0)
    expected_mask = torch.zeros(len(RESPONSE_LENS), WIDTH, dtype=torch.float64)
    expected_mask[REAL] = values.token_mask
    assert torch.equal(padded(TOKEN_MASK)[valid], expected_mask[valid])
    expected_coef = torch.zeros(len(RESPONSE_LENS), dtype=torch.float64)
    expected_coef[REAL] = values.sample_coef.float().double()
    assert torch.equal(written[SAMPLE_COEF].double(), expected_coef)

    # the scalars and the nucleus request went to the workers with the batch, and left with it
    (sent,) = patched.sent
    non_tensor = ("uid", "extra_fields", "reward_model", "multi_modal_inputs")  # (a text model)
    assert sorted(sent.pop("fields")) == sorted(k for k in queue.store.keys() if k not in non_tensor)
    assert "multi_modal_inputs" in out.fields and "uid" in out.fields  # the batch names every field again
    assert sent[SIREN_STEP_KEY] == SCALARS
    assert sent[SIREN_ENTROPY_KEY] == {"top_p": trainer.entropy_spec.config.top_p,
                                       "boundary": trainer.entropy_spec.config.boundary,
                                       "chunk_size": trainer.entropy_spec.config.chunk_size}
    assert SIREN_STEP_KEY not in out.extra_info and SIREN_ENTROPY_KEY not in out.extra_info

    # metrics: the controller's, the reward counters over the real rows, the loss's without "actor/"
    assert metrics["entropy/full_mean"] == 0.75
    assert (metrics["reward/timeouts"], metrics["reward/parse_failures"]) == (2.0, 2.0)
    assert metrics["entropy/siren_term"] == 0.5 and metrics["actor/pg_loss"] == -0.1

    # the forking-token report of this step, from the same read
    report = tmp_path / "p" / "e" / "forking_tokens.jsonl"
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(records) == 3 and {r["step"] for r in records} == {3}


def test_no_report_step_and_no_flags_read_only_what_the_controller_needs(patched, tmp_path):
    trainer = _trainer(tmp_path, "par", every_n_steps=2)  # step 3 is no report step
    queue = patched.queue
    present = [k for k in queue.store.keys() if k not in ("extra_fields", "rollout_is_weights")]
    trainer._update_actor(_batch(present), {})
    assert queue.reads == [["response_mask", "entropy", "advantages", "rm_scores", "uid"]]
    assert len(queue.writes) == 1
    assert SIREN_STEP_KEY not in patched.sent[0]  # PAR adds no loss term: no scalars for the workers
    assert not (tmp_path / "p" / "e" / "forking_tokens.jsonl").exists()


def test_a_batch_without_entropy(patched, tmp_path):
    trainer = _trainer(tmp_path, "siren")
    without = [k for k in patched.queue.store.keys() if k != "entropy"]
    with pytest.raises(RuntimeError, match="the old-log-prob pass stored no entropy; entropy_control.method=siren"):
        trainer._update_actor(_batch(without), {})
    plain = _trainer(tmp_path, "none")
    plain._update_actor(_batch(without), {})  # nothing to observe: verl's update alone
    assert patched.queue.reads == [] and patched.queue.writes == [] and len(patched.sent) == 1


@pytest.mark.parametrize("multi_modal", [False, True])
@pytest.mark.parametrize("stage", ["_compute_old_log_prob", "_compute_ref_log_prob", "_update_actor"])
def test_the_workers_are_sent_the_tensor_fields_only(patched, monkeypatch, tmp_path, stage, multi_modal):
    """Every worker call of a step names the batch's tensor fields, and `multi_modal_inputs` (the one
    non-tensor field verl's engine reads) for a model with a processor, not the dataset row or the
    agent loop's records; the batch names what it named before once the call returns, also when the
    call fails."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    trainer = _trainer(tmp_path, "none")
    trainer.processor = object() if multi_modal else None
    named = list(patched.queue.store.keys())
    sent, batches = [], []

    def worker_call(self, batch, metrics):
        sent.append(sorted(batch.fields))
        batches.append(batch)
        if len(sent) == 2:
            raise RuntimeError("worker died")
        return batch

    monkeypatch.setattr(PPOTrainer, stage, worker_call)
    out = getattr(trainer, stage)(_batch(list(named)), {})
    dropped = {"uid", "extra_fields", "reward_model"} | (set() if multi_modal else {"multi_modal_inputs"})
    expected = sorted(k for k in named if k not in dropped)
    assert sent == [expected] and ("multi_modal_inputs" in expected) == multi_modal
    assert out is batches[0] and set(named) <= set(out.fields)  # it names every field again
    with pytest.raises(RuntimeError, match="worker died"):
        getattr(trainer, stage)(_batch(list(named)), {})
    assert sent[1] == expected and set(named) <= set(batches[1].fields)
    if stage != "_update_actor":  # (there the step's own write names every stored field)
        sent.clear()
        getattr(trainer, stage)(_batch(["responses", "uid", "entropy"]), {})
        assert sent == [["entropy", "responses"]]  # a batch that names a subset is sent no more
