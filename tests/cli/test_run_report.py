"""The per-step console line of `siren-verl train` (parsed from verl's console logger) and its columns."""

from siren_verl.cli.run_report import format_step_line, parse_console_step, progress_bar


def test_parses_verls_console_line_through_rays_prefix():
    # verl/utils/logger/aggregate_logger.py: "step:N - key:value - ..." (numpy scalars via pprint)
    line = ("\x1b[36m(TaskRunner pid=42)\x1b[0m step:3 - critic/score/mean:np.float64(0.25) - "
            "entropy/anchor:1.5 - entropy/reg_loss:3e-05 - training/global_step:3 - note:abc\n")
    step, metrics = parse_console_step(line)
    assert step == 3
    assert metrics == {"critic/score/mean": 0.25, "entropy/anchor": 1.5, "entropy/reg_loss": 3e-05,
                       "training/global_step": 3.0}
    assert parse_console_step("(TaskRunner pid=42) Training Progress: 33%") is None


def test_step_line_shows_the_methods_quantities():
    siren = {"critic/score/mean": 0.125, "entropy/full_mean": 2.5, "entropy/nucleus_mean": 1.25,
             "entropy/selected_mean": 2.0, "entropy/anchor": 1.9, "entropy/coef": 0.005,
             "entropy/reg_loss": 1e-4, "entropy/selected_frac": 0.2, "timing_s/step": 12.34}
    line = format_step_line(2, siren, total=4, parts={"coef_schedule": "constant"})
    assert line == ("step 2/4 [#####-----]  reward 0.125  H_full 2.500  H_nucleus 1.250  H_selected 2.000  "
                    "anchor 1.900  reg_loss 1.00e-04  (12.3 s)")
    aer = {"critic/score/mean": 0.5, "entropy/full_mean": 2.5, "entropy/coef": 0.0, "entropy/target": 1.25}
    assert format_step_line(1, aer, parts={"coef_schedule": "aer"}) == (
        "step 1  reward 0.500  H_full 2.500  target 1.250  coef 0")
    par = {"critic/score/mean": 0.5, "entropy/pos_adv_weight": 0.2}
    assert format_step_line(10, par, total=10).endswith("lambda 0.200")


def test_progress_bar_bounds():
    assert progress_bar(0, 5) == "step 0/5 [----------]"
    assert progress_bar(5, 5) == "step 5/5 [##########]"
    assert progress_bar(7, 5) == "step 7/5 [##########]"  # a resumed run past its old total
    assert progress_bar(3, None) == "step 3"
