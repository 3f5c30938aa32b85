"""scripts/experiments/entropy_collapse.sh and collapse_report.py, without training anything.

The script: shellcheck; `--dry-run` (the commands, parsed as a shell would, and every method's
overrides composed through Hydra and siren-verl's method config); a full pass with a stand-in
`siren-verl` that writes metrics files, which exercises run folders, DONE markers, failure and the
report. The report: its numbers against hand-worked means and standard errors on synthetic logs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "experiments" / "entropy_collapse.sh"
REPORT = REPO / "scripts" / "experiments" / "collapse_report.py"
METHODS = ["grpo", "naive", "siren", "aer", "par", "clip_cov"]  # the script's default list
PRESET_OF = {"grpo": "none"}


def load_report():
    # by path: verl's wheel ships a top-level `scripts` package that would shadow ours
    spec = importlib.util.spec_from_file_location("entropy_collapse_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def run_script(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    knobs = ("STEPS", "SEEDS", "OUT_DIR", "METHODS", "MID", "VAL_N", "NAIVE_COEF", "DOCS_DIR", "NICE")
    base = {k: v for k, v in os.environ.items() if k not in knobs}
    base.update(env)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=cwd, env=base, capture_output=True, text=True, timeout=120
    )


def train_commands(stdout: str) -> list[list[str]]:
    commands = [shlex.split(line) for line in stdout.splitlines() if line.strip()]
    return [words for words in commands if "train" in words]


def overrides_of(words: list[str]) -> list[str]:
    return words[words.index("--config-name") + 2 :]


def value(overrides: list[str], key: str) -> str:
    values = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == key]
    if not values:
        raise KeyError(key)
    return values[-1]


def test_shellcheck_clean(shellcheck):
    proc = shellcheck("--severity=style", SCRIPT.relative_to(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_one_run_per_method_and_seed(tmp_path):
    out = tmp_path / "exp"
    proc = run_script(
        ["--dry-run", "actor_rollout_ref.actor.optim.lr=1e-4"],
        tmp_path,
        STEPS="8",
        SEEDS="4 7",
        OUT_DIR=str(out),
        NAIVE_COEF="0.3",
        METHODS="grpo naive siren@0.5 aer par clip_cov",
    )
    assert proc.returncode == 0, proc.stderr
    assert not out.exists(), "a dry run must not create anything"
    commands = train_commands(proc.stdout)
    entries = ["grpo", "naive", "siren@0.5", "aer", "par", "clip_cov"]
    assert len(commands) == 12
    seen = []
    for words in commands:
        assert words[words.index("--config-name") + 1] == "cpu_testbed"
        ov = overrides_of(words)
        name = value(ov, "trainer.experiment_name")
        entry, seed = name.rsplit("-seed", 1)
        entry = entry.replace("-b", "@")
        seen.append((entry, seed))
        run_dir = out / name
        assert value(ov, "entropy_control.method") == PRESET_OF.get(entry.split("@")[0], entry.split("@")[0])
        assert value(ov, "trainer.total_training_steps") == "8"
        for key in (
            "data.seed",
            "actor_rollout_ref.rollout.seed",
            "actor_rollout_ref.actor.data_loader_seed",
        ):
            assert value(ov, key) == seed
        # validation at steps 4 and 8 with 32 samples per problem, and at step 0 in the first run of
        # each seed (the runs of a seed share it: same base policy, same validation samples)
        assert value(ov, "trainer.val_before_train") == ("true" if entry == "grpo" else "false")
        assert value(ov, "trainer.test_freq") == "4"
        assert value(ov, "actor_rollout_ref.rollout.val_kwargs.n") == "32"
        assert value(ov, "actor_rollout_ref.rollout.val_kwargs.do_sample") == "true"
        assert value(ov, "ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH") == str(
            run_dir / "metrics.jsonl"
        )
        assert value(ov, "trainer.resume_mode") == "disable"
        assert value(ov, "trainer.save_freq") == "-1"
        assert ov[-1] == "actor_rollout_ref.actor.optim.lr=1e-4"  # extra overrides come last
        if entry == "naive":
            assert value(ov, "entropy_control.coef") == "0.3"
        elif entry == "siren@0.5":
            assert value(ov, "entropy_control.coef") == "0.5"
        else:
            with pytest.raises(KeyError):
                value(ov, "entropy_control.coef")
    assert seen == [(e, s) for s in ("4", "7") for e in entries]

    report = [shlex.split(line) for line in proc.stdout.splitlines() if "collapse_report.py" in line]
    assert len(report) == 1
    words = report[0]
    runs = words[words.index("--runs") + 1 : words.index("--labels")]
    labels = words[words.index("--labels") + 1 : words.index("--out")]
    assert runs == [str(out / f"{e.replace('@', '-b')}-seed{s}") for s in ("4", "7") for e in entries]
    assert labels == ["GRPO", "naive β=0.3", "SIREN β=0.5", "AER", "PAR", "Clip-Cov"] * 2
    assert words[words.index("--out") + 1] == str(out / "report")


def test_dry_run_defaults_and_the_validation_schedule(tmp_path):
    proc = run_script(["--dry-run"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    commands = train_commands(proc.stdout)
    assert len(commands) == len(METHODS) * 3
    for words in commands:
        ov = overrides_of(words)
        assert value(ov, "trainer.total_training_steps") == "16"
        assert value(ov, "trainer.test_freq") == "8"
        assert value(ov, "trainer.default_local_dir").startswith(str(REPO / "outputs" / "entropy_collapse"))
    assert value(overrides_of(commands[1]), "entropy_control.coef") == "0.05"
    # the first entry validates the base policy, whatever whitespace surrounds METHODS
    padded = run_script(["--dry-run"], tmp_path, METHODS="  grpo  siren ", SEEDS="1")
    assert [value(overrides_of(w), "trainer.val_before_train") for w in train_commands(padded.stdout)] == [
        "true",
        "false",
    ]
    # MID=0 (or MID=STEPS): validate at step 0 and at the end only
    only_ends = run_script(["--dry-run"], tmp_path, STEPS="6", MID="0", METHODS="grpo", SEEDS="1")
    assert value(overrides_of(train_commands(only_ends.stdout)[0]), "trainer.test_freq") == "6"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STEPS": "0"}, "STEPS=0"),
        ({"VAL_N": "x"}, "VAL_N=x"),
        ({"SEEDS": "1 x"}, "SEEDS: 'x'"),
        ({"SEEDS": " "}, "SEEDS is empty"),
        ({"METHODS": "grpo Siren"}, "METHODS: 'Siren'"),
        ({"METHODS": "par@1"}, "METHODS: 'par@1': only naive, siren and aer take @β"),
        ({"METHODS": "siren@x"}, "METHODS: 'siren@x': the β after @"),
        ({"NAIVE_COEF": "-1"}, "NAIVE_COEF=-1"),
        ({"MID": "40"}, "MID=40"),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path, env, message):
    proc = run_script(["--dry-run"], tmp_path, **env)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "train" not in proc.stdout


def test_every_methods_overrides_compose_into_a_valid_config(tmp_path):
    """Every run's overrides are real keys of the preset (Hydra refuses unknown ones) and a valid
    entropy_control for the method (siren-verl's ConfigError otherwise)."""
    from siren_verl.main import compose_config
    from siren_verl.verl_glue.trainer import method_spec_from_config

    proc = run_script(["--dry-run"], tmp_path, STEPS="5", SEEDS="2", OUT_DIR=str(tmp_path / "exp"))
    assert proc.returncode == 0, proc.stderr
    for words in train_commands(proc.stdout):
        ov = overrides_of(words)
        config = compose_config(ov, config_name="cpu_testbed")
        assert config.entropy_control.method == value(ov, "entropy_control.method")
        assert config.trainer.total_training_steps == 5 and config.trainer.test_freq == 2
        assert config.actor_rollout_ref.rollout.val_kwargs.n == 32
        assert config.reward.custom_reward_function.path.endswith("siren_verl.testbed.reward")
        assert method_spec_from_config(config) is not None
        # the actor worker's generators (Clip-Cov's torch.randperm) are seeded by the run's seed
        engine = config.actor_rollout_ref.actor.fsdp_config
        assert engine.full_determinism and engine.seed == int(value(ov, "data.seed")) == 2
        if config.entropy_control.method == "naive":
            assert config.entropy_control.coef == pytest.approx(0.05)


# ---------------------------------------------------------------------------------------------
# a full pass with a stand-in siren-verl
# ---------------------------------------------------------------------------------------------
STUB = r"""#!/usr/bin/env bash
# stand-in for siren-verl train: writes a metrics file with validation at steps 0, 2 and 4
echo "$*" >> "$STUB_LOG"
for arg in "$@"; do
    case "$arg" in
        *VERL_FILE_LOGGER_PATH=*) metrics=${arg#*=} ;;
        entropy_control.method=*) method=${arg#*=} ;;
    esac
done
if [[ "$method" == "${STUB_FAIL:-}" ]]; then echo "boom in $method"; exit 3; fi
for step in 0 1 2 3 4; do
    if (( step % 2 == 0 )); then
        printf '{"step": %d, "data": {"val-siren/average/pass@1": 0.%d, "val-siren/average/pass@2": 0.%d5, "val-siren/average/avg@1": 0.%d, "val-siren/average/maj@2": 0.%d}}\n' \
            "$step" "$((step + 1))" "$((step + 1))" "$((step + 1))" "$((step + 1))" >> "$metrics"
    fi
    if (( step > 0 )); then
        printf '{"step": %d, "data": {"entropy/full_mean": %d.5, "critic/score/mean": 0.%d}}\n' "$step" "$step" "$step" >> "$metrics"
    fi
done
"""


@pytest.fixture
def stub(tmp_path):
    path = tmp_path / "siren-verl-stub"
    path.write_text(STUB)
    path.chmod(0o755)
    log = tmp_path / "stub.log"
    return {"SIREN_VERL": str(path), "STUB_LOG": str(log), "PYTHON": sys.executable}, log


def test_full_pass_with_a_stand_in_trainer(tmp_path, stub):
    env, log = stub
    out, docs = tmp_path / "exp", tmp_path / "docs"
    common = dict(STEPS="4", SEEDS="1 2", METHODS="grpo siren", OUT_DIR=str(out), **env)
    proc = run_script([], tmp_path, DOCS_DIR=str(docs), **common)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(log.read_text().splitlines()) == 4
    for name in ("grpo-seed1", "siren-seed1", "grpo-seed2", "siren-seed2"):
        assert (out / name / "DONE").is_file()
        assert "--config-name cpu_testbed" in (out / name / "command.txt").read_text()
    summary = (out / "report" / "summary.md").read_text()
    # every run logged the same numbers: step 4 pass@1 = 0.5, no spread over the two seeds
    assert (
        "| GRPO (step 4) | 2 | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.550 ± 0.000 | 0.500 ± 0.000 | 3.500 ± 0.000 |"
        in summary
    )
    assert (
        "| base policy (step 0) | – | 0.100 ± 0.000 | 0.100 ± 0.000 | 0.150 ± 0.000 | 0.100 ± 0.000 | – |"
        in summary
    )
    assert (out / "report" / "curves.png").stat().st_size > 10_000
    assert (docs / "entropy_collapse.png").is_file() and (docs / "entropy_collapse_summary.md").is_file()
    # a second pass skips the finished runs and only reports again
    log.write_text("")
    again = run_script([], tmp_path, **common)
    assert again.returncode == 0, again.stderr
    assert log.read_text() == "" and again.stdout.count("skipped") == 4


def test_a_failed_run_stops_the_sweep_before_the_report(tmp_path, stub):
    env, _ = stub
    out = tmp_path / "exp"
    proc = run_script(
        [],
        tmp_path,
        STEPS="4",
        SEEDS="1",
        METHODS="grpo siren par",
        OUT_DIR=str(out),
        STUB_FAIL="siren",
        **env,
    )
    assert proc.returncode == 1
    assert "siren-seed1: FAILED" in proc.stderr and "boom in siren" in proc.stderr
    assert (out / "grpo-seed1" / "DONE").is_file() and not (out / "siren-seed1" / "DONE").exists()
    assert not (out / "par-seed1").exists() and not (out / "report").exists()


# ---------------------------------------------------------------------------------------------
# collapse_report.py on synthetic logs
# ---------------------------------------------------------------------------------------------
def write_run(
    folder: Path,
    validations: dict[int, dict[str, float]],
    entropy: list[float],
    extra: dict[str, list[float]] | None = None,
) -> Path:
    """A run folder with verl's file-logger JSONL: validations at their steps, entropy (and the `extra`
    training metrics, one value per step) at steps 1, 2, ..."""
    folder.mkdir(parents=True)
    lines = []
    for step, metrics in validations.items():
        lines.append({"step": step, "data": {f"val-siren/average/{k}": v for k, v in metrics.items()}})
    for step, h in enumerate(entropy, start=1):
        data = {"entropy/full_mean": h, "critic/score/mean": 0.1 * step}
        data.update({key: values[step - 1] for key, values in (extra or {}).items()})
        lines.append({"step": step, "data": data})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def val(p1: float, p32: float) -> dict[str, float]:
    return {"avg@1": p1, "pass@1": p1, "pass@8": (p1 + p32) / 2, "pass@32": p32, "maj@8": p1 + 0.01}


def test_mean_and_standard_error_hand_worked():
    r = load_report()
    assert r.mean_se([1.0, 2.0, 4.0]) == pytest.approx(
        (7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2 / 3))
    )
    assert r.mean_se([0.5]) == (0.5, None)
    with pytest.raises(ValueError):
        r.mean_se([])


def test_table_columns_follow_the_logged_ks():
    r = load_report()
    assert r.table_columns([1, 2, 4, 8, 16, 32]) == ["avg@1", "pass@1", "pass@8", "pass@32", "maj@8"]
    assert r.table_columns([1, 2, 4]) == ["avg@1", "pass@1", "pass@4", "maj@4"]
    assert r.table_columns([]) == []


def test_summary_numbers_on_synthetic_runs(tmp_path):
    r = load_report()
    runs = []
    # GRPO: pass@1 rises, pass@32 falls; three seeds with known spread
    for seed, (p1, p32) in enumerate([(0.5, 0.6), (0.6, 0.7), (0.7, 0.8)], start=1):
        base = val(0.2 + 0.01 * seed, 0.9)
        runs.append(
            write_run(
                tmp_path / f"grpo-seed{seed}",
                {0: base, 5: val(0.4, 0.85), 10: val(p1, p32)},
                [2.0, 1.5, 1.0, 0.5 * seed],
            )
        )
    # SIREN: the same step-0 numbers per seed (same base policy and sampling seed); one run lacks maj@8
    for seed in (1, 2, 3):
        end = val(0.5, 0.9)
        if seed == 3:
            del end["maj@8"]
        runs.append(
            write_run(
                tmp_path / f"siren-seed{seed}",
                {0: val(0.2 + 0.01 * seed, 0.9), 10: end},
                [2.0, 2.0, 1.9, 1.9],
            )
        )
    loaded = r.load_runs([str(p) for p in runs], ["GRPO"] * 3 + ["SIREN"] * 3)
    report = r.summarize(loaded, "average", entropy_window=2)
    grpo, siren = report["methods"]
    assert report["ks"] == [1, 8, 32] and report["top"] == "pass@32"
    assert grpo.final_step == 10 and grpo.seeds == ["1", "2", "3"]
    mean, se = r.mean_se([0.5, 0.6, 0.7])
    assert grpo.at_end["pass@1"].mean == pytest.approx(mean) and grpo.at_end["pass@1"].se == pytest.approx(se)
    assert grpo.at_end["pass@1"].se == pytest.approx(0.1 / math.sqrt(3))
    # paired change: end − step 0 of the same run
    assert grpo.change["pass@32"].mean == pytest.approx(((0.6 - 0.9) + (0.7 - 0.9) + (0.8 - 0.9)) / 3)
    assert grpo.change["pass@1"].mean == pytest.approx(((0.5 - 0.21) + (0.6 - 0.22) + (0.7 - 0.23)) / 3)
    # the final entropy averages the last 2 training steps of each run, then over seeds
    assert grpo.entropy.mean == pytest.approx(((1.0 + 0.5) / 2 + (1.0 + 1.0) / 2 + (1.0 + 1.5) / 2) / 3)
    assert siren.entropy.mean == pytest.approx(1.9) and siren.entropy.se == pytest.approx(0.0)
    # a missing metric is left out, never counted as 0
    assert siren.at_end["maj@8"].n == 2 and siren.at_end["maj@8"].mean == pytest.approx(0.51)
    # the base row: step 0, averaged within a seed, error over seeds
    assert report["base"]["pass@1"].mean == pytest.approx(0.22) and report["base"]["pass@1"].n == 3
    assert set(grpo.by_step) == {0, 5, 10} and set(siren.by_step) == {0, 10}
    assert grpo.by_step[5]["pass@32"].mean == pytest.approx(0.85)

    out = tmp_path / "out"
    assert (
        r.main(
            [
                "--runs",
                *map(str, runs),
                "--labels",
                *(["GRPO"] * 3 + ["SIREN"] * 3),
                "--out",
                str(out),
                "--entropy-window",
                "2",
            ]
        )
        == 0
    )
    text = (out / "summary.md").read_text()
    assert (
        "| SIREN (step 10) | 3 | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.700 ± 0.000 | 0.900 ± 0.000 | 0.510 ± 0.000 | 1.900 ± 0.000 |"
        in text
    )
    assert "| GRPO | +0.380 ± 0.052 |" in text  # avg@1 change, paired
    saved = json.loads((out / "summary.json").read_text())
    assert saved["methods"][0]["at_end"]["pass@1"]["mean"] == pytest.approx(0.6)
    assert saved["base"]["pass@32"]["mean"] == pytest.approx(0.9)


def test_report_refuses_runs_without_validation_and_mismatched_labels(tmp_path):
    r = load_report()
    run = write_run(tmp_path / "grpo-seed1", {}, [1.0, 0.5])
    with pytest.raises(SystemExit, match="no run logged val-siren/average/pass@k"):
        r.summarize(r.load_runs([str(run)], ["GRPO"]), "average", 3)
    with pytest.raises(SystemExit, match="2 labels for 1 runs"):
        r.load_runs([str(run)], ["A", "B"])
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        r.load_runs([str(tmp_path / "nowhere")], ["A"])


def test_runs_of_a_seed_share_the_one_base_validation(tmp_path):
    r = load_report()
    first = write_run(tmp_path / "grpo-seed1", {0: val(0.2, 0.9), 4: val(0.5, 0.8)}, [1.0])
    second = write_run(tmp_path / "siren-seed1", {4: val(0.3, 0.95)}, [1.0])
    other_seed = write_run(tmp_path / "siren-seed2", {4: val(0.3, 0.95)}, [1.0])
    runs = r.load_runs([str(first), str(second), str(other_seed)], ["GRPO", "SIREN", "SIREN"])
    r.share_base_validation(runs, "average")
    assert runs[1].steps[0]["val-siren/average/pass@32"] == 0.9
    assert 0 not in runs[2].steps  # no run of seed 2 validated step 0: nothing is invented
    report = r.summarize(runs, "average", 1)
    siren = report["methods"][1]
    assert siren.change["pass@32"].n == 1 and siren.change["pass@32"].mean == pytest.approx(0.05)
    assert report["base"]["pass@1"].n == 1  # the base row counts seed 1 once


def test_controller_table_first_step_and_tail_over_seeds(tmp_path):
    """SIREN's anchor/selected entropy and PAR's λ: the first training step and the mean of the last
    `window` steps, per run, then mean ± s.e. over seeds; a method that does not log a key shows n/a."""
    r = load_report()
    runs = []
    for seed, drift in ((1, 0.0), (2, 0.02)):
        runs.append(
            write_run(
                tmp_path / f"siren-seed{seed}",
                {0: val(0.2, 0.9), 4: val(0.3, 0.9)},
                [0.34, 0.33, 0.32, 0.31],
                {
                    "entropy/anchor": [0.2] * 4,
                    "entropy/selected_mean": [0.2, 0.19, 0.18 + drift, 0.16 + drift],
                },
            )
        )
    runs.append(
        write_run(
            tmp_path / "par-seed1",
            {0: val(0.2, 0.9), 4: val(0.3, 0.95)},
            [0.34, 0.36, 0.38, 0.40],
            {"entropy/pos_adv_weight": [0.0, 0.05, 0.1, 0.15]},
        )
    )
    runs.append(
        write_run(tmp_path / "grpo-seed1", {0: val(0.2, 0.9), 4: val(0.3, 0.85)}, [0.34, 0.3, 0.28, 0.26])
    )
    loaded = r.load_runs([str(p) for p in runs], ["SIREN", "SIREN", "PAR", "GRPO"])
    report = r.summarize(loaded, "average", entropy_window=2)
    siren, par, grpo = report["methods"]
    first, last = siren.control["entropy/selected_mean"]
    assert first.mean == pytest.approx(0.2) and first.se == pytest.approx(0.0)
    # last 2 steps per run: (0.18 + 0.16) / 2 = 0.17 and (0.20 + 0.18) / 2 = 0.19 -> mean 0.18, se 0.01
    assert last.mean == pytest.approx(0.18) and last.se == pytest.approx(0.01)
    assert siren.control["entropy/anchor"][1].mean == pytest.approx(0.2)
    assert set(siren.control) == {"entropy/anchor", "entropy/selected_mean"}
    assert par.control["entropy/pos_adv_weight"][0].mean == 0.0
    assert (
        par.control["entropy/pos_adv_weight"][1].mean == pytest.approx(0.125)
        and par.control["entropy/pos_adv_weight"][1].se is None
    )
    assert grpo.control == {}
    text = r.markdown(report)
    assert "| method | anchor | selected_mean | pos_adv_weight |" in text
    assert "| SIREN | 0.2000 ± 0.0000 -> 0.2000 ± 0.0000 | 0.2000 ± 0.0000 -> 0.1800 ± 0.0100 | n/a |" in text
    assert "| GRPO | n/a | n/a | n/a |" in text
    saved = r.as_json(report)
    assert saved["methods"][1]["control"]["entropy/pos_adv_weight"]["last"]["mean"] == pytest.approx(0.125)
