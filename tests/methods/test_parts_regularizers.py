"""Loss-side regulariser forms (docs/methods.md §3 anchored square, §6 bonus) and the regulariser table. Pure:
the AER per-token form against verl's own agg_loss is in tests/glue/test_parts_against_verl.py."""

from __future__ import annotations

import pytest
import torch

from siren_verl.methods.parts.regularizers import anchored_square, bonus

# ------------------------------------------------------------------------------------ anchored square


def test_anchored_square_hand_worked_and_two_sided_gradient():
    for h, sign in ((0.3, -1.0), (0.7, 1.0)):
        h_bar = torch.tensor(h, dtype=torch.float64, requires_grad=True)
        term = anchored_square(h_bar, anchor=0.5, coef=0.005)
        assert term.item() == pytest.approx(0.005 * 0.04)
        term.backward()
        # d/dh beta (h - H0)^2 = 2 beta (h - H0): below the anchor the loss pushes entropy up, above down
        assert h_bar.grad.item() == pytest.approx(sign * 2 * 0.005 * 0.2)


def test_anchored_square_tensor_anchor_is_a_constant():
    h_bar = torch.tensor(1.2, requires_grad=True)
    anchor = torch.tensor(1.0, requires_grad=True)
    anchored_square(h_bar, anchor, coef=2.0).backward()
    assert anchor.grad is None
    assert h_bar.grad.item() == pytest.approx(2 * 2.0 * 0.2)
    assert anchored_square(torch.tensor(0.5), 0.5, coef=3.0).item() == 0.0


def test_bonus_hand_worked():
    h = torch.tensor(0.8, requires_grad=True)
    term = bonus(h, coef=0.01)
    assert term.item() == pytest.approx(-0.008)
    term.backward()
    assert h.grad.item() == pytest.approx(-0.01)  # minimising the loss raises entropy


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: anchored_square(torch.tensor(0.1), 0.2, coef=-1.0), r"coef=-1.0: .*\[0, inf\)"),
        (lambda: anchored_square(torch.tensor(0.1), float("nan"), coef=1.0), r"anchor=nan"),
        (lambda: anchored_square(torch.tensor([0.1, 0.2]), 0.2, coef=1.0), "h_bar: must be a scalar"),
        (lambda: anchored_square(torch.tensor(0.1), torch.tensor([0.1, 0.2]), coef=1.0), "anchor: must be a scalar"),
        (lambda: bonus(torch.tensor(0.1), coef=float("inf")), r"coef=inf"),
        (lambda: bonus(torch.ones(3), coef=0.1), "h_agg: must be a scalar"),
    ],
)
def test_scalar_forms_reject_bad_input(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# ------------------------------------------------------------------------------------------- table
def test_regularizer_table_terms_are_the_forms_above():
    from siren_verl.methods.parts.regularizers import REGULARIZERS

    h = torch.tensor([[0.5, 1.5, 9.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    sel = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)

    def agg(values, mask):  # token mean over the selection: (0.5 + 1.5 + 2) / 3
        return (values * mask).sum() / mask.sum()

    square = REGULARIZERS["anchored_square"].term(h, sel, agg, coef=2.0, anchor=1.0)
    assert square.item() == pytest.approx(2.0 * (4.0 / 3 - 1.0) ** 2)
    for name in ("bonus", "adaptive_target"):
        assert REGULARIZERS[name].term(h, sel, agg, coef=0.5, anchor=None).item() == pytest.approx(-0.5 * 4.0 / 3)
    per_sample = torch.tensor([1.0, 0.0], dtype=torch.float64)  # row 1 gets no bonus
    assert REGULARIZERS["bonus"].term(h, sel, agg, coef=per_sample, anchor=None).item() == pytest.approx(-2.0 / 3)
    with pytest.raises(ValueError, match="no anchor H_0"):
        REGULARIZERS["anchored_square"].term(h, sel, agg, coef=2.0, anchor=None)
    assert [n for n, f in REGULARIZERS.items() if f.uses_anchor] == ["anchored_square"]
    assert [n for n, f in REGULARIZERS.items() if f.per_micro_batch] == ["anchored_square"]


def test_a_name_registers_once():
    from siren_verl.methods.parts.regularizers import register_regularizer

    with pytest.raises(ValueError, match="already registered"):
        register_regularizer("bonus", uses_anchor=False, per_micro_batch=False, coef_schedules=("constant",))(bonus)
