"""entropy_control validation (docs/methods.md §10): every bad value fails with a message naming the full key
and the allowed range; presets resolve to their parts; ablations and invalid part combinations."""

import os

import pytest
import yaml

from siren_verl.methods import config as mc
from siren_verl.methods.config import (
    ConfigError,
    EntropyControlConfig,
    parse_entropy_control,
    resolve,
)
from siren_verl.methods.presets import METHODS, PARTS, PRESETS

YAML = os.path.join(os.path.dirname(mc.__file__), "..", "config", "siren_base.yaml")


def _yaml_group():
    with open(YAML) as f:
        return yaml.safe_load(f)["entropy_control"]


def test_yaml_defaults_equal_the_dataclass_defaults():
    assert parse_entropy_control(_yaml_group()) == EntropyControlConfig()


def test_yaml_declares_every_key_of_the_schema():
    group = _yaml_group()
    schema = EntropyControlConfig().to_dict()
    assert set(group) == set(schema)
    for name, value in schema.items():
        if isinstance(value, dict):
            assert set(group[name]) == set(value), name


@pytest.mark.parametrize(
    "overrides,key,fragment",
    [
        ({"method": "sirne"}, "entropy_control.method='sirne'", "must be one of none, siren"),
        ({"top_p": 1.5}, "entropy_control.top_p=1.5", "(0, 1]"),
        ({"top_p": 0.0}, "entropy_control.top_p=0.0", "(0, 1]"),
        ({"top_p": True}, "entropy_control.top_p=True", "(0, 1]"),
        ({"peak_quantile": 1.0}, "entropy_control.peak_quantile=1.0", "[0, 1)"),
        ({"peak_quantile": -0.1}, "entropy_control.peak_quantile=-0.1", "[0, 1)"),
        ({"peak_upper_quantile": 0.5}, "entropy_control.peak_upper_quantile=0.5", "above entropy_control.peak_quantile"),
        ({"peak_upper_quantile": 1.2}, "entropy_control.peak_upper_quantile=1.2", "[0, 1]"),
        ({"coef": -0.1}, "entropy_control.coef=-0.1", "[0, inf)"),
        ({"coef": float("nan")}, "entropy_control.coef=nan", "[0, inf)"),
        ({"anchor": -1.0}, "entropy_control.anchor=-1.0", "[0, inf)"),
        ({"boundary": "open"}, "entropy_control.boundary='open'", "exclusive, inclusive"),
        ({"chunk_size": 0}, "entropy_control.chunk_size=0", "integer >= 1"),
        ({"agg_mode": "mean"}, "entropy_control.agg_mode='mean'", "seq-mean-token-mean"),
        ({"token_selection": "top"}, "entropy_control.token_selection='top'", "all, peak, batch_top"),
        ({"regularizer": "square"}, "entropy_control.regularizer='square'", "anchored_square"),
        ({"without_anchor": "yes"}, "entropy_control.without_anchor='yes'", "true or false"),
        ({"aer": {"eta": -1}}, "entropy_control.aer.eta=-1", "[0, inf)"),
        ({"aer": {"alpha0": 0.1}}, "entropy_control.aer.alpha0=0.1", "[0, 0.05]"),
        ({"aer": {"rho_hard": 1.0}}, "entropy_control.aer.rho_hard=1.0", "[0, 1)"),
        ({"aer": {"difficulty": "hard"}}, "entropy_control.aer.difficulty='hard'", "linear, threshold, none"),
        ({"par": {"lambda0": 1.5}}, "entropy_control.par.lambda0=1.5", "[0, 1]"),
        ({"par": {"schedule": "cosine"}}, "entropy_control.par.schedule='cosine'", "entropy_guided"),
        ({"adaptive_target": {"delta": -0.1}}, "entropy_control.adaptive_target.delta=-0.1", "[0, inf)"),
        ({"adaptive_target": {"target": None}}, "entropy_control.adaptive_target.target=None", "exactly one"),
        ({"entropy_adv": {"kappa": 0}}, "entropy_control.entropy_adv.kappa=0", "(0, inf)"),
        ({"forking_tokens": {"rho": 0}}, "entropy_control.forking_tokens.rho=0", "(0, 1]"),
        ({"forking_report": {"top_n": 0}}, "entropy_control.forking_report.top_n=0", "integer >= 1"),
        ({"forking_report": {"every_n_steps": -1}}, "entropy_control.forking_report.every_n_steps=-1", ">= 0"),
    ],
)
def test_bad_values_name_the_full_key_and_range(overrides, key, fragment):
    with pytest.raises(ConfigError) as err:
        resolve(parse_entropy_control({"method": "siren", **overrides}))
    message = str(err.value)
    assert message.startswith(key), message
    assert fragment in message, message


@pytest.mark.parametrize(
    "raw,named",
    [
        ({"methd": "siren"}, "entropy_control.methd"),
        ({"aer": {"etaa": 0.1}}, "entropy_control.aer.etaa"),
        ({"forking_report": {"every": 1}}, "entropy_control.forking_report.every"),
    ],
)
def test_unknown_keys_are_named(raw, named):
    with pytest.raises(ConfigError, match=f"unknown key\\(s\\) {named}"):
        parse_entropy_control(raw)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("method", METHODS)
def test_every_preset_resolves_with_all_parts(method):
    spec = resolve(parse_entropy_control({"method": method}))
    assert set(spec.parts) == set(PARTS)
    for part, value in spec.parts.items():
        assert value in PARTS[part]
    assert spec.coef == PRESETS[method].coef


def test_siren_preset_is_the_paper_setting():
    spec = resolve(parse_entropy_control({"method": "siren"}))
    assert spec.parts["entropy_measure"] == "nucleus"
    assert spec.parts["selection_measure"] == "nucleus"
    assert spec.parts["token_selection"] == "peak"
    assert spec.parts["regularizer"] == "anchored_square"
    assert spec.coef == 0.005 and spec.agg_mode == "seq-mean-token-mean"
    assert spec.needs_nucleus and spec.needs_loss and spec.needs_anchor


@pytest.mark.parametrize(
    "ablation,expected",
    [
        ("without_top_p", {"entropy_measure": "full", "selection_measure": "full"}),
        ("token_first", {"entropy_measure": "nucleus", "selection_measure": "full"}),
        ("without_peak_mask", {"token_selection": "all"}),
        ("without_anchor", {"regularizer": "bonus"}),
    ],
)
def test_ablations_are_parts(ablation, expected):
    spec = resolve(parse_entropy_control({"method": "siren", ablation: True}))
    for part, value in expected.items():
        assert spec.parts[part] == value


def test_without_top_p_needs_no_nucleus():
    assert not resolve(parse_entropy_control({"method": "siren", "without_top_p": True})).needs_nucleus


def test_part_override_from_cli():
    spec = resolve(parse_entropy_control({"method": "siren", "token_selection": "all", "coef": 0.01}))
    assert spec.parts["token_selection"] == "all" and spec.coef == 0.01


@pytest.mark.parametrize(
    "raw,fragment",
    [
        ({"method": "naive", "without_anchor": True}, "entropy_control.without_anchor=true: needs entropy_control.regularizer=anchored_square"),
        ({"method": "siren", "without_top_p": True, "entropy_measure": "nucleus"}, "contradicts entropy_control.entropy_measure=nucleus"),
        ({"method": "siren", "without_top_p": True, "token_first": True}, "choose one"),
        ({"method": "siren", "coef_schedule": "aer"}, "entropy_control.coef_schedule=aer"),
        ({"method": "naive", "coef_schedule": "adaptive"}, "entropy_control.coef_schedule=adaptive: needs regularizer=adaptive_target"),
        ({"method": "naive", "regularizer": "adaptive_target"}, "needs coef_schedule=adaptive"),
        ({"method": "siren", "agg_mode": "pg"}, "entropy_control.agg_mode=pg"),
        ({"method": "par", "coef": 0.1}, "entropy_control.coef=0.1: method 'par' has no entropy regulariser"),
        ({"method": "par", "regularizer": "bonus"}, "set entropy_control.coef"),
        ({"method": "none", "token_selection": "batch_top"}, "pg_token_selection=batch_top"),
        ({"method": "aer", "aer": {"anchored_target": False}}, "entropy_control.aer.target"),
    ],
)
def test_invalid_combinations_fail_at_startup(raw, fragment):
    with pytest.raises(ConfigError) as err:
        resolve(parse_entropy_control(raw))
    assert fragment in str(err.value)


# ---------------------------------------------------------------------------------------------
# issue 17: errors name what the user set and the fix
# ---------------------------------------------------------------------------------------------
def test_without_anchor_with_a_fixed_anchor_is_contradictory():
    with pytest.raises(ConfigError) as err:
        resolve(parse_entropy_control({"method": "siren", "without_anchor": True, "anchor": 1.0}))
    message = str(err.value)
    assert "entropy_control.without_anchor=true and entropy_control.anchor=1.0" in message
    assert "remove entropy_control.anchor" in message and "without_anchor=false" in message


def test_a_fixed_anchor_the_method_does_not_use_is_refused():
    with pytest.raises(ConfigError, match=r"entropy_control.anchor=1.0: method 'naive' .* has no anchor H_0"):
        resolve(parse_entropy_control({"method": "naive", "anchor": 1.0}))
    # the anchor of an anchored target (AER: H* = ρ·H_0) is one the method uses
    spec = resolve(parse_entropy_control({"method": "aer", "anchor": 1.0}))
    assert spec.uses_anchor and not spec.needs_anchor


def test_anchored_square_under_a_method_with_pg_aggregation_names_what_the_user_set():
    with pytest.raises(ConfigError) as err:
        resolve(parse_entropy_control({"method": "none", "regularizer": "anchored_square", "coef": 0.01}))
    message = str(err.value)
    assert message.startswith("entropy_control.regularizer=anchored_square: aggregates H̄ per micro-batch"), message
    assert "method 'none'" in message and "set entropy_control.agg_mode=seq-mean-token-mean" in message
    assert not message.startswith("entropy_control.agg_mode"), message


def test_a_preset_value_in_an_error_says_it_is_the_method_default():
    with pytest.raises(ConfigError) as err:
        resolve(parse_entropy_control({"method": "naive", "regularizer": "adaptive_target"}))
    assert "entropy_control.coef_schedule=constant (method 'naive''s default)" in str(err.value)


@pytest.mark.parametrize(
    "raw,suggestion",
    [
        ({"topp": 0.9}, "did you mean entropy_control.top_p?"),
        ({"aer": {"rho_targt": 0.4}}, "did you mean entropy_control.aer.rho_target?"),
    ],
)
def test_unknown_keys_get_the_closest_valid_key(raw, suggestion):
    with pytest.raises(ConfigError) as err:
        parse_entropy_control(raw)
    assert suggestion in str(err.value)
    assert "allowed keys under entropy_control" in str(err.value)


def test_unknown_key_without_a_close_match_lists_the_keys_only():
    with pytest.raises(ConfigError) as err:
        parse_entropy_control({"zzzzzz": 1})
    assert "did you mean" not in str(err.value) and "top_p" in str(err.value)


# ---------------------------------------------------------------------------------------------
# the parts' tables drive the allowed values and the combination checks
# ---------------------------------------------------------------------------------------------
def test_part_values_come_from_the_tables():
    from siren_verl.methods.parts.regularizers import REGULARIZERS
    from siren_verl.methods.parts.schedules import COEF_SCHEDULES, LAMBDA_SCHEDULES

    assert PARTS["regularizer"] == ("none", *REGULARIZERS)
    assert PARTS["coef_schedule"] == tuple(COEF_SCHEDULES)
    assert mc.PAR_SCHEDULES == tuple(LAMBDA_SCHEDULES)
    for form in REGULARIZERS.values():
        assert set(form.coef_schedules) <= set(COEF_SCHEDULES), form.name


@pytest.mark.parametrize("reg", ["bonus", "anchored_square", "adaptive_target"])
@pytest.mark.parametrize("sched", ["constant", "aer", "adaptive"])
def test_combination_check_follows_the_regularizer_table(reg, sched):
    from siren_verl.methods.parts.regularizers import REGULARIZERS

    raw = {"method": "siren", "regularizer": reg, "coef_schedule": sched}
    if not REGULARIZERS[reg].per_micro_batch:
        raw["agg_mode"] = "token-mean"
    if sched in REGULARIZERS[reg].coef_schedules:
        assert resolve(parse_entropy_control(raw)).parts["regularizer"] == reg
    else:
        with pytest.raises(ConfigError, match=f"entropy_control.coef_schedule={sched}: needs regularizer="):
            resolve(parse_entropy_control(raw))
