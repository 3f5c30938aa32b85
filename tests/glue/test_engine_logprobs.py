"""siren-verl's engine computes verl's log-probs without verl's per-token loop
(siren_verl/verl_glue/siren_engine.py): `row_blocked_logprobs` equals float64 log_softmax (values and
gradients) for any block size, it is used only where verl would take its per-row path, and the engine
points verl's name at it for the duration of its own `prepare_model_outputs` only."""

import inspect

import pytest
import torch

pytest.importorskip("verl")
import verl.utils.torch_functional as verl_F  # noqa: E402
import verl.workers.engine.fsdp.transformer_impl as transformer_impl  # noqa: E402

from siren_verl.verl_glue import siren_engine  # noqa: E402


def _reference(logits, labels):
    return torch.log_softmax(logits.double(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("shape", [(37, 27), (3, 11, 27), (5, 1000), (0, 27)])
@pytest.mark.parametrize("block_elements", [1, 54, 27 * 7 + 3, 1 << 24])
def test_blocked_logprobs_equal_float64_log_softmax_values_and_gradients(shape, block_elements):
    gen = torch.Generator().manual_seed(sum(shape) + block_elements)
    logits = (3 * torch.randn(*shape, generator=gen)).requires_grad_(True)
    labels = torch.randint(0, shape[-1], shape[:-1], generator=gen)
    got = siren_engine.row_blocked_logprobs(logits, labels, block_elements=block_elements)
    assert got.shape == labels.shape and got.dtype == torch.float32
    ref_logits = logits.detach().double().requires_grad_(True)
    expected = _reference(ref_logits, labels)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-6)
    if got.numel():
        weights = torch.randn(labels.shape, generator=gen, dtype=torch.float64)
        (got.double() * weights).sum().backward()
        (expected * weights).sum().backward()
        torch.testing.assert_close(logits.grad.double(), ref_logits.grad, atol=1e-5, rtol=1e-5)


def test_blocked_logprobs_agree_with_verls_per_row_version():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 27, generator=gen)
    labels = torch.randint(0, 27, (64,), generator=gen)
    torch.testing.assert_close(
        siren_engine.row_blocked_logprobs(logits, labels), verl_F.logprobs_from_logits_v2(logits, labels),
        atol=1e-6, rtol=0,
    )  # fmt: skip


def test_the_blocked_path_only_where_verl_would_loop_per_row(monkeypatch):
    x32, x16 = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bfloat16)
    monkeypatch.setattr(verl_F, "FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE", False)
    monkeypatch.setattr(verl_F, "NPU_CROSS_ENTROPY_LOSS_AVAILABLE", False)
    assert siren_engine.verl_uses_per_row_logprobs(x32)
    assert not siren_engine.verl_uses_per_row_logprobs(x16)  # verl's bf16 branch: log_softmax per row, kept
    monkeypatch.setattr(verl_F, "NPU_CROSS_ENTROPY_LOSS_AVAILABLE", True)
    assert not siren_engine.verl_uses_per_row_logprobs(x32)
    monkeypatch.setattr(verl_F, "NPU_CROSS_ENTROPY_LOSS_AVAILABLE", False)
    monkeypatch.setattr(verl_F, "FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE", True)
    assert not siren_engine.verl_uses_per_row_logprobs(x32)
    monkeypatch.setenv("VERL_DISABLE_FLASH_ATTN_CE", "1")  # verl then loops per row again
    assert siren_engine.verl_uses_per_row_logprobs(x32)


def test_other_paths_go_to_verls_function(monkeypatch):
    calls = []
    monkeypatch.setattr(verl_F, "logprobs_from_logits", lambda *a, **k: calls.append(k) or "verl")
    assert siren_engine.engine_logprobs(torch.zeros(2, 3, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.long)) == "verl"
    assert calls == [{"inplace_backward": True}]


def test_verls_prepare_model_outputs_still_calls_the_name_the_engine_points():
    """A verl upgrade that stops calling its module's `logprobs_from_logits` from
    prepare_model_outputs would silently bypass the blocked path: fail here instead."""
    source = inspect.getsource(transformer_impl.FSDPEngineWithLMHead.prepare_model_outputs)
    assert "logprobs_from_logits(" in source
    assert transformer_impl.logprobs_from_logits is verl_F.logprobs_from_logits


def test_the_name_is_pointed_for_the_engines_call_only_and_put_back_on_error(monkeypatch):
    seen = []

    def verl_prepare(self, output, output_args, micro_batch, logits_processor_func):
        seen.append(transformer_impl.logprobs_from_logits)
        if output == "fail":
            raise RuntimeError("boom")
        return {"log_probs": "x"}

    monkeypatch.setattr(transformer_impl.FSDPEngineWithLMHead, "prepare_model_outputs", verl_prepare)
    engine = object.__new__(siren_engine.SirenFSDPEngineWithLMHead)
    original = transformer_impl.logprobs_from_logits
    from tensordict import TensorDict

    micro_batch = TensorDict({}, batch_size=[])
    assert engine.prepare_model_outputs("ok", {}, micro_batch, None) == {"log_probs": "x"}
    with pytest.raises(RuntimeError, match="boom"):
        engine.prepare_model_outputs("fail", {}, micro_batch, None)
    assert seen == [siren_engine.engine_logprobs, siren_engine.engine_logprobs]
    assert transformer_impl.logprobs_from_logits is original
