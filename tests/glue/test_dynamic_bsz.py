"""Order-invariance under dynamic batch size, through verl's real TrainingWorker/FSDP engine (CPU).

With `use_dynamic_bsz=True` verl regroups the sequences into token-budgeted micro-batches
(`rearrange_micro_batches`: a balanced partition, so rows leave their original order) and puts the
per-token outputs back in order afterwards (`restore_dynamic_batch`). The public SIREN reference
restored the log-probs' order but not the entropies', so its step-1 anchor paired one response's
entropies with another response's mask. Here, with a token budget that forces uneven, re-ordered
micro-batches:

* the full and nucleus entropies (and |N|) of the old-log-prob pass equal, response by response,
  those of a run with dynamic batch size off (float32 rounding);
* the SIREN controller's step-1 anchor H_0 computed from them is the same;
* the anchored square's gradient accumulated over verl's dynamic micro-batches equals an
  independent float64 autograd computation of Σ_m (B_m/G)·β·(H̄_m − H_0)² over the very partition
  verl chose (docs/methods.md §3: H̄ is per micro-batch, so the partition is part of the objective),
  and differs from the same objective over the fixed-size partition.
"""

import copy

import pytest
import torch

from siren_verl.methods.config import parse_entropy_control, resolve
from siren_verl.methods.controller import EntropyController, StepInputs, regularizer_spec
from siren_verl.testing.reference import (
    nucleus_entropy_bruteforce,
    peak_mask_reference,
    seq_mean_token_mean_reference,
)
from siren_verl.testing.verl_worker import (
    build_actor,
    hf_copy,
    infer,
    make_rollout_batch,
    padded_rows,
    response_logits,
    to_engine_input,
)

TOP_P = 0.8
REQUEST = {"top_p": TOP_P, "boundary": "exclusive", "chunk_size": 5}
BATCH, PROMPT_LEN, RESPONSE_LEN = 10, 6, 9
TOKEN_BUDGET = 30  # per micro-batch; sequences hold 4..15 tokens -> 4+ uneven micro-batches
ROW = "siren_test_row"  # a per-row tensor field that travels with the rows, to read the partition


@pytest.fixture(scope="module")
def actor(tiny_model_dir, dist_env):
    return build_actor(tiny_model_dir, mini_batch_size=BATCH, micro_batch_size=2, use_remove_padding=False)


@pytest.fixture(scope="module")
def batch():
    return make_rollout_batch(
        batch_size=BATCH, prompt_len=PROMPT_LEN, response_len=RESPONSE_LEN, seed=21, min_response_len=1
    )


def _siren_spec():
    return resolve(parse_entropy_control({"method": "siren", "top_p": TOP_P}))


def _infer(actor, batch, dynamic: bool):
    meta = dict(siren_entropy=REQUEST, use_dynamic_bsz=dynamic)
    if dynamic:
        meta["max_token_len_per_gpu"] = TOKEN_BUDGET
    else:
        meta["micro_batch_size_per_gpu"] = 2
    out, _ = infer(actor, batch, **meta)
    return out


def _partition(actor, batch, **meta):
    """The rows of each micro-batch of verl's forward_backward_batch, read inside the loss."""
    rows = []

    def recorder(model_output, data, dp_group=None):
        rows.append(data[ROW].tolist())
        return model_output["log_probs"].values().sum() * 0, {}

    _engine_grads(actor, batch, recorder, **meta)
    return rows


def _engine_grads(actor, batch, loss_fn, **meta):
    """verl's forward_backward_batch (micro-batching, loss scaling, backward), no optimizer step."""
    engine = actor.worker.engine
    td = to_engine_input(
        batch,
        calculate_entropy=True,
        compute_loss=True,
        global_batch_size=len(batch),
        use_remove_padding=False,
        use_fused_kernels=False,
        siren_entropy=REQUEST,
        **meta,
    )
    td[ROW] = torch.arange(len(batch))
    with engine.train_mode():
        engine.optimizer_zero_grad()
        output = engine.forward_backward_batch(td, loss_fn, forward_only=False)
        grads = {
            name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).detach().clone()
            for name, p in engine.module.named_parameters()
            if p.grad is not None
        }
        engine.optimizer_zero_grad()
    return output, grads


DYNAMIC = dict(use_dynamic_bsz=True, max_token_len_per_gpu=TOKEN_BUDGET)


def test_budget_forces_uneven_reordered_micro_batches(actor, batch):
    parts = _partition(actor, batch, **DYNAMIC)
    assert sorted(r for part in parts for r in part) == list(range(BATCH))
    assert len(parts) >= 3 and len({len(p) for p in parts}) >= 2, parts  # uneven sizes
    assert [r for part in parts for r in part] != list(range(BATCH)), parts  # rows re-ordered
    lengths = batch.batch["attention_mask"].sum(-1)
    assert all(int(lengths[p].sum()) <= TOKEN_BUDGET for p in parts)


def test_entropies_and_anchor_do_not_depend_on_dynamic_bsz(actor, batch):
    fixed = _infer(actor, batch, dynamic=False)
    dynamic = _infer(actor, batch, dynamic=True)
    mask = batch.batch["response_mask"].bool()
    for key in ("log_probs", "entropy", "siren_nucleus_entropy"):
        torch.testing.assert_close(dynamic[key] * mask, fixed[key] * mask, atol=2e-6, rtol=1e-5, msg=key)
    assert torch.equal(dynamic["siren_nucleus_size"] * mask, fixed["siren_nucleus_size"] * mask)
    # the check can fail: responses differ from each other, so any mis-pairing shows
    per_row = (fixed["siren_nucleus_entropy"] * mask).sum(-1)
    assert per_row.unique().numel() == BATCH

    spec = _siren_spec()
    anchors = []
    for out in (fixed, dynamic):
        controller = EntropyController(spec, actor_agg_mode="token-mean", total_steps=10, total_epochs=1)
        values = controller.observe(
            StepInputs(
                response_mask=mask,
                full_entropy=out["entropy"] * mask,
                nucleus_entropy=out["siren_nucleus_entropy"] * mask,
                nucleus_size=out["siren_nucleus_size"] * mask,
                advantages=batch.batch["advantages"],
            )
        )
        anchors.append(values.scalars["anchor"])
    assert anchors[0] == pytest.approx(anchors[1], rel=1e-6, abs=1e-7)
    # and it is the reference's anchor: one response's entropies with its own mask
    with torch.no_grad():
        logits = response_logits(hf_copy(actor), batch)
    h = padded_rows([nucleus_entropy_bruteforce(z, TOP_P) for z in logits], RESPONSE_LEN)
    selected = peak_mask_reference(h, mask, spec.config.peak_quantile)
    expected = float(seq_mean_token_mean_reference(h, selected, mask))
    assert anchors[1] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def _independent_grads(actor, batch, partition, spec, coef, anchor):
    """Σ_m (B_m/G)·β·(H̄_m − H_0)² in float64 autograd on an HF copy of the engine's model
    (advantages are zero, so verl's PG part contributes neither loss nor gradient)."""
    model = hf_copy(actor)
    mask = batch.batch["response_mask"].bool()
    total = 0.0
    for rows in partition:
        sub = batch[rows]
        logits = response_logits(model, sub)
        h = padded_rows([nucleus_entropy_bruteforce(z, TOP_P) for z in logits], RESPONSE_LEN)
        sel = peak_mask_reference(h, mask[rows], spec.peak_quantile)
        h_bar = seq_mean_token_mean_reference(h, sel, mask[rows])
        total = total + len(rows) / len(batch) * coef * (h_bar - anchor) ** 2
    total.backward()
    return float(total.detach()), {name: p.grad for name, p in model.named_parameters()}


def test_anchored_square_gradient_follows_verls_partition(actor, batch):
    from siren_verl.verl_glue.loss import SirenPPOLoss

    batch = copy.deepcopy(batch)
    batch.batch["advantages"] = torch.zeros_like(batch.batch["advantages"])
    out = _infer(actor, batch, dynamic=False)
    batch.batch["old_log_probs"] = out["log_probs"] * batch.batch["response_mask"]
    method = _siren_spec()
    spec = regularizer_spec(method, "token-mean")
    coef, anchor = 2.0, 0.3
    loss_fn = SirenPPOLoss(copy.deepcopy(actor.actor_config), spec)
    step = {"siren_step": {"coef": coef, "anchor": anchor}}

    partition = _partition(actor, batch, **DYNAMIC)
    output, grads = _engine_grads(actor, batch, loss_fn, **DYNAMIC, **step)
    expected_loss, expected = _independent_grads(actor, batch, partition, spec, coef, anchor)

    assert float(sum(output["loss"])) == pytest.approx(expected_loss, rel=1e-5, abs=1e-7)
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in expected.values()))
    assert norm > 1e-4
    assert set(grads) == set(expected)
    for name, grad in grads.items():
        torch.testing.assert_close(grad.double(), expected[name], atol=1e-6 * float(norm) + 1e-9, rtol=1e-4)

    # the partition matters: the same objective over fixed pairs of rows is another number
    pairs = [list(range(i, i + 2)) for i in range(0, BATCH, 2)]
    other_loss, _ = _independent_grads(actor, batch, pairs, spec, coef, anchor)
    assert abs(other_loss - expected_loss) > 1e-4 * abs(expected_loss)
    fixed_output, _ = _engine_grads(
        actor, batch, loss_fn, use_dynamic_bsz=False, micro_batch_size_per_gpu=2, **step
    )
    assert float(sum(fixed_output["loss"])) == pytest.approx(other_loss, rel=1e-5, abs=1e-7)
