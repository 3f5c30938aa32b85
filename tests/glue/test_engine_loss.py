"""verl's real TrainingWorker/FSDP engine on CPU with siren-verl's engine hook and loss:

* the nucleus entropies the engine returns equal an independent float64 computation from the
  model's logits, with remove-padding on and off (docs/methods.md §1);
* the SIREN loss and its gradient w.r.t. the model parameters, accumulated over verl's
  micro-batches, equal an independent autograd computation (docs/methods.md §3 + the micro-batch scaling of
  siren_verl.methods.loss).
"""

import pytest
import torch

from siren_verl.methods.loss import RegularizerSpec
from siren_verl.testing.reference import (
    full_entropy,
    nucleus_entropy_bruteforce,
    nucleus_size_bruteforce,
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


@pytest.fixture(scope="module")
def padded_actor(tiny_model_dir, dist_env):
    return build_actor(tiny_model_dir, mini_batch_size=8, micro_batch_size=4, use_remove_padding=False)


@pytest.fixture(scope="module")
def rmpad_actor(tiny_model_dir, dist_env):
    return build_actor(tiny_model_dir, mini_batch_size=8, micro_batch_size=4, use_remove_padding=True)


@pytest.mark.parametrize("remove_padding", [False, True])
def test_engine_returns_nucleus_entropy_equal_to_independent_computation(remove_padding, padded_actor, rmpad_actor):
    handle = rmpad_actor if remove_padding else padded_actor
    batch = make_rollout_batch(batch_size=6, response_len=7, seed=3)
    # one sequence per micro-batch: CPU attention has no varlen kernel for packed sequences, so only
    # then do both paths see identical model inputs
    out, _ = infer(handle, batch, siren_entropy=REQUEST, micro_batch_size_per_gpu=1)
    mask = batch.batch["response_mask"].bool()
    R = mask.shape[1]
    with torch.no_grad():
        logits = response_logits(hf_copy(handle), batch)
    expected_h = padded_rows([nucleus_entropy_bruteforce(z, TOP_P) for z in logits], R)
    expected_full = padded_rows([full_entropy(z) for z in logits], R)
    expected_size = padded_rows([nucleus_size_bruteforce(z, TOP_P) for z in logits], R)
    torch.testing.assert_close(out["siren_nucleus_entropy"][mask].double(), expected_h[mask], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out["entropy"][mask].double(), expected_full[mask], atol=2e-5, rtol=1e-5)
    assert torch.equal(out["siren_nucleus_size"][mask].double(), expected_size[mask])
    # the statistic is not trivial on this model: nuclei of several sizes, some empty
    assert expected_size[mask].unique().numel() > 2


def test_remove_padding_on_off_same_nucleus_entropies(padded_actor, rmpad_actor):
    batch = make_rollout_batch(batch_size=5, response_len=6, seed=11)
    a, _ = infer(padded_actor, batch, siren_entropy=REQUEST, micro_batch_size_per_gpu=1)
    b, _ = infer(rmpad_actor, batch, siren_entropy=REQUEST, micro_batch_size_per_gpu=1)
    mask = batch.batch["response_mask"].bool()
    torch.testing.assert_close(a["siren_nucleus_entropy"][mask], b["siren_nucleus_entropy"][mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(a["siren_nucleus_size"][mask], b["siren_nucleus_size"][mask])


@pytest.mark.parametrize("remove_padding", [False, True])
def test_engine_log_probs_equal_independent_computation(remove_padding, padded_actor, rmpad_actor):
    """The log-probs the engine returns (through siren-verl's blocked logsumexp on CPU, see
    siren_engine.row_blocked_logprobs) equal float64 log_softmax of the model's logits at the
    response tokens."""
    from siren_verl.verl_glue.siren_engine import verl_uses_per_row_logprobs

    assert verl_uses_per_row_logprobs(torch.zeros(1, 2))  # the engine's blocked path is what runs here
    handle = rmpad_actor if remove_padding else padded_actor
    batch = make_rollout_batch(batch_size=6, response_len=7, seed=4)
    out, _ = infer(handle, batch, micro_batch_size_per_gpu=1)
    mask = batch.batch["response_mask"].bool()
    R = mask.shape[1]
    with torch.no_grad():
        logits = response_logits(hf_copy(handle), batch)
    expected = padded_rows(
        [torch.log_softmax(z.double(), -1).gather(-1, batch.batch["responses"][i, : z.shape[0]].unsqueeze(-1)).squeeze(-1)
         for i, z in enumerate(logits)], R)  # fmt: skip
    torch.testing.assert_close(out["log_probs"][mask].double(), expected[mask], atol=2e-5, rtol=1e-5)


def test_plain_requests_are_untouched(padded_actor):
    batch = make_rollout_batch(batch_size=4, seed=5)
    out, _ = infer(padded_actor, batch)
    assert set(out) == {"log_probs", "entropy"}


# ---------------------------------------------------------------------------------------------
# loss + gradient through the engine
# ---------------------------------------------------------------------------------------------
def _engine_grads(handle, batch, loss_fn, step, micro_batch_size=4, **meta):
    """verl's forward_backward_batch (micro-batching, loss scaling, backward) without the optimizer."""
    engine = handle.worker.engine
    td = to_engine_input(
        batch,
        calculate_entropy=True,
        compute_loss=True,
        global_batch_size=len(batch),
        use_remove_padding=False,
        use_dynamic_bsz=False,
        micro_batch_size_per_gpu=micro_batch_size,
        use_fused_kernels=False,
        siren_entropy=REQUEST,
        siren_step=step,
        **meta,
    )
    with engine.train_mode():
        engine.optimizer_zero_grad()
        output = engine.forward_backward_batch(td, loss_fn, forward_only=False)
        grads = {
            name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).detach().clone()
            for name, p in engine.module.named_parameters()
            if p.grad is not None
        }
        engine.optimizer_zero_grad()
    return sum(output["loss"]), grads, output["metrics"]


def _siren_loss(handle, spec):
    import copy

    from siren_verl.verl_glue.loss import SirenPPOLoss

    return SirenPPOLoss(copy.deepcopy(handle.actor_config), spec)


def _independent(handle, batch, old_log_probs, spec, coef, anchor, micro_batch_size=4):
    """Σ_m [PG_m + w_m·coef·(H̄_m − H_0)²] with plain autograd in float64 on an HF copy of the model.
    PG: verl's vanilla clipped surrogate in token-mean form, normalised by the mini-batch's tokens;
    with old ≈ current log-probs no clipping is active, so PG = −Σ A·ratio / N."""
    model = hf_copy(handle)
    mask = batch.batch["response_mask"].bool()
    adv = batch.batch["advantages"].double()
    total_tokens = int(mask.sum())
    B, R = mask.shape
    total, reg_total = 0.0, 0.0
    n_micro = B // micro_batch_size
    for m in range(n_micro):
        rows = slice(m * micro_batch_size, (m + 1) * micro_batch_size)
        sub = batch[rows]
        logits = response_logits(model, sub)
        logp = padded_rows(
            [torch.log_softmax(z, -1).gather(-1, sub.batch["responses"][i, : z.shape[0]].unsqueeze(-1)).squeeze(-1)
             for i, z in enumerate(logits)], R)
        mmask = mask[rows]
        ratio = torch.exp(logp - old_log_probs[rows].double())
        assert ((ratio - 1).abs()[mmask] < 0.2).all()  # no clipping active: the closed form holds
        pg = -(adv[rows] * ratio * mmask).sum() / total_tokens
        measure = nucleus_entropy_bruteforce if spec.entropy_measure == "nucleus" else None
        h = padded_rows([measure(z, TOP_P) if measure else full_entropy(z) for z in logits], R)
        sel = peak_mask_reference(h, mmask, spec.peak_quantile) if spec.token_selection == "peak" else mmask
        h_bar = seq_mean_token_mean_reference(h, sel, mmask)
        weight = micro_batch_size / B  # w_m = B_m·D/G with D = 1, G = B
        if spec.regularizer == "anchored_square":
            term = weight * coef * (h_bar - anchor) ** 2
        else:
            term = -weight * coef * h_bar
        total = total + pg + term
        reg_total += float(term)
    total.backward()
    return float(total), reg_total, {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    "regularizer,zero_advantages",
    [("anchored_square", True), ("anchored_square", False), ("bonus", False)],
)
def test_siren_loss_and_gradient_equal_independent_computation(padded_actor, regularizer, zero_advantages):
    spec = RegularizerSpec(
        regularizer=regularizer,
        entropy_measure="nucleus",
        selection_measure="nucleus",
        token_selection="peak",
        agg_mode="seq-mean-token-mean",
        peak_quantile=0.5,
    )
    batch = make_rollout_batch(batch_size=8, response_len=8, seed=7, min_response_len=2)
    if zero_advantages:
        batch.batch["advantages"] = torch.zeros_like(batch.batch["advantages"])
    out, _ = infer(padded_actor, batch)
    # old log-probs slightly off the current ones: ratio != 1 but inside the clip range
    noise = 0.05 * torch.randn(out["log_probs"].shape, generator=torch.Generator().manual_seed(0))
    old = (out["log_probs"] + noise) * batch.batch["response_mask"]
    batch.batch["old_log_probs"] = old
    coef, anchor = 2.0, 0.3  # a large β so the SIREN term is not lost next to the PG term
    step = {"coef": coef, "anchor": anchor}

    loss, grads, metrics = _engine_grads(padded_actor, batch, _siren_loss(padded_actor, spec), step)
    expected_loss, expected_reg, expected_grads = _independent(padded_actor, batch, old, spec, coef, anchor)

    assert loss == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
    assert set(grads) == set(expected_grads)
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in expected_grads.values()))
    assert norm > 1e-4
    for name, grad in grads.items():
        torch.testing.assert_close(grad.double(), expected_grads[name], atol=1e-6 * float(norm) + 1e-9, rtol=1e-4)
    # verl's Metric with SUM aggregation over the micro-batches = the mini-batch's regulariser term
    assert metrics["entropy/reg_loss"].aggregate() == pytest.approx(expected_reg, rel=1e-5, abs=1e-9)
    assert expected_reg != 0.0
