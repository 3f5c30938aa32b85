"""scripts/experiments/entropy_dynamics.sh and summarize.py, without training anything.

The script is checked three ways: shellcheck; `--dry-run` (the commands it would run, parsed the
way a shell would, and each run's overrides composed through Hydra and siren-verl's method
config); and a full pass with a stand-in `siren-verl` (a small bash stub that writes a metrics file
and a PNG), which exercises the orchestration (run dirs, DONE markers, failure, plot, summary).
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
SCRIPT = REPO / "scripts" / "experiments" / "entropy_dynamics.sh"
SUMMARIZE = REPO / "scripts" / "experiments" / "summarize.py"
METHODS = ["none", "naive", "siren", "siren@10", "par"]  # the script's default list


def run_name(entry: str, seed: str) -> str:
    """`siren@10`, seed 1 -> `siren-b10-seed1`; `par` -> `par-seed1` (the script's run dirs)."""
    method, _, beta = entry.partition("@")
    return f"{method}-b{beta}-seed{seed}" if beta else f"{method}-seed{seed}"


def entry_of(overrides: list[str]) -> str:
    """A run's METHODS entry, read back from its overrides (its experiment name)."""
    name = value(overrides, "trainer.experiment_name").rsplit("-seed", 1)[0]
    method, _, beta = name.partition("-b")
    return f"{method}@{beta}" if beta else method


def load_summarize():
    # by path: verl's wheel ships a top-level `scripts` package that would shadow ours
    spec = importlib.util.spec_from_file_location("entropy_dynamics_summarize", SUMMARIZE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("STEPS", "SEEDS", "OUT_DIR", "METHODS")}
    base.update(env)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=tmp_path, env=base, capture_output=True, text=True, timeout=120
    )


def train_commands(stdout: str) -> list[list[str]]:
    """The `siren-verl train` command lines of a dry run, split the way a shell would."""
    commands = [shlex.split(line) for line in stdout.splitlines() if line.strip()]
    return [words for words in commands if "train" in words]


def overrides_of(words: list[str]) -> list[str]:
    return words[words.index("--config-name") + 2 :]


def value(overrides: list[str], key: str) -> str:
    values = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == key]
    if not values:
        raise KeyError(key)
    return values[-1]


# ---------------------------------------------------------------------------------------------
# shellcheck
# ---------------------------------------------------------------------------------------------
def test_shellcheck_clean(shellcheck):
    proc = shellcheck("--severity=style", SCRIPT.relative_to(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# --dry-run
# ---------------------------------------------------------------------------------------------
def test_dry_run_prints_one_run_per_method_and_seed(tmp_path):
    out = tmp_path / "exp"
    proc = run_script(
        ["--dry-run", "actor_rollout_ref.actor.optim.lr=1e-3"],
        tmp_path,
        STEPS="7",
        SEEDS="3 5",
        OUT_DIR=str(out),
        NAIVE_COEF="0.2",
        FORKING_EVERY="2",
    )
    assert proc.returncode == 0, proc.stderr
    assert not out.exists(), "a dry run must not create anything"
    commands = train_commands(proc.stdout)
    assert len(commands) == 10
    seen = []
    for words in commands:
        assert words[:3] == ["nice", "-n", "10"]
        assert words[words.index("--config-name") + 1] == "cpu_learn"
        ov = overrides_of(words)
        method, seed, entry = value(ov, "entropy_control.method"), value(ov, "data.seed"), entry_of(ov)
        assert entry.split("@")[0] == method
        seen.append((entry, seed))
        run_dir = out / run_name(entry, seed)
        assert value(ov, "trainer.total_training_steps") == "7"
        assert value(ov, "actor_rollout_ref.rollout.seed") == seed
        assert value(ov, "actor_rollout_ref.actor.data_loader_seed") == seed
        assert value(ov, "ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH") == str(
            run_dir / "metrics.jsonl"
        )
        assert value(ov, "trainer.default_local_dir") == str(run_dir / "checkpoints")
        assert value(ov, "trainer.resume_mode") == "disable"
        assert value(ov, "ray_kwargs.ray_init.address") == "local"
        # the extra argument reaches every run, last (so it wins)
        assert ov[-1] == "actor_rollout_ref.actor.optim.lr=1e-3"
        if method == "naive":
            assert value(ov, "entropy_control.coef") == "0.2"
        elif entry == "siren@10":
            assert value(ov, "entropy_control.coef") == "10"
        else:
            with pytest.raises(KeyError):
                value(ov, "entropy_control.coef")
        if method == "siren":
            assert value(ov, "entropy_control.forking_report.every_n_steps") == "2"
        else:
            with pytest.raises(KeyError):
                value(ov, "entropy_control.forking_report.every_n_steps")
    assert seen == [(m, s) for s in ("3", "5") for m in METHODS]

    plot = [shlex.split(line) for line in proc.stdout.splitlines() if " plot " in line]
    assert len(plot) == 1
    words = plot[0]
    assert words[words.index("plot") + 1 : words.index("--labels")] == [
        str(out / run_name(m, s)) for s in ("3", "5") for m in METHODS
    ]
    labels = words[words.index("--labels") + 1 : words.index("--metrics")]
    # one label per method: its seeds share a colour in the figure
    assert labels == ["GRPO", "naive β=0.2", "SIREN", "SIREN β=10", "PAR"] * 2
    assert words[-2:] == ["-o", str(out / "entropy_dynamics.png")]
    assert f"cp {out / 'entropy_dynamics.png'} docs/entropy_dynamics.png" in proc.stdout


def test_dry_run_defaults(tmp_path):
    proc = run_script(["--dry-run"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    commands = train_commands(proc.stdout)
    assert [entry_of(overrides_of(w)) for w in commands] == METHODS
    for words in commands:
        ov = overrides_of(words)
        assert value(ov, "trainer.total_training_steps") == "16"
        assert value(ov, "data.seed") == "1"
        assert value(ov, "trainer.default_local_dir").startswith(str(REPO / "outputs" / "entropy_dynamics"))
    naive = overrides_of(commands[1])
    assert value(naive, "entropy_control.coef") == "0.1"


def test_dry_run_format_start_warms_up_first_and_every_run_starts_from_it(tmp_path):
    out = tmp_path / "exp"
    proc = run_script(["--dry-run"], tmp_path, INIT="format", OUT_DIR=str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]
    warm = lines[0]
    assert warm[warm.index("--out") + 1] == str(out / "init-model")
    assert any(w.endswith("warm_start.py") for w in warm)
    assert warm[warm.index("--toy-dir") + 1] == str(out / "toy")
    for words in train_commands(proc.stdout):
        ov = overrides_of(words)
        assert value(ov, "actor_rollout_ref.model.path") == str(out / "init-model")
        assert value(ov, "siren_toy.dir") == str(out / "toy")
    random_start = run_script(["--dry-run"], tmp_path, OUT_DIR=str(out))
    assert "warm_start.py" not in random_start.stdout
    for words in train_commands(random_start.stdout):
        with pytest.raises(KeyError):
            value(overrides_of(words), "actor_rollout_ref.model.path")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STEPS": "0"}, "STEPS=0"),
        ({"STEPS": "ten"}, "STEPS=ten"),
        ({"SEEDS": "1 x"}, "SEEDS: 'x'"),
        ({"SEEDS": " "}, "SEEDS is empty"),
        ({"METHODS": "none aer"}, "METHODS: 'aer'"),
        ({"METHODS": "par@1"}, "METHODS: 'par@1'"),
        ({"METHODS": "siren@x"}, "METHODS: 'siren@x': the β after @"),
        ({"METHODS": "naive@-1"}, "METHODS: 'naive@-1'"),
        ({"FORKING_EVERY": "-1"}, "FORKING_EVERY=-1"),
        ({"INIT": "pretrained"}, "INIT=pretrained"),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path, env, message):
    proc = run_script(["--dry-run"], tmp_path, **env)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "train" not in proc.stdout


def test_dry_run_overrides_compose_into_valid_configs(tmp_path):
    """Every run's overrides are real keys of the preset (Hydra refuses unknown ones) and a valid
    entropy_control for the method (siren-verl's ConfigError otherwise)."""
    from omegaconf import OmegaConf

    from siren_verl.main import compose_config
    from siren_verl.verl_glue.trainer import method_spec_from_config

    proc = run_script(["--dry-run"], tmp_path, STEPS="5", OUT_DIR=str(tmp_path / "exp"))
    assert proc.returncode == 0, proc.stderr
    for words in train_commands(proc.stdout):
        ov = overrides_of(words)
        config = compose_config(ov, config_name=words[words.index("--config-name") + 1])
        method = value(ov, "entropy_control.method")
        assert config.entropy_control.method == method
        assert config.trainer.total_training_steps == 5
        assert OmegaConf.select(
            config, "ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"
        ) == str(tmp_path / "exp" / run_name(entry_of(ov), "1") / "metrics.jsonl")
        spec = method_spec_from_config(config)
        if method == "naive":
            assert config.entropy_control.coef == pytest.approx(0.1)
        if entry_of(ov) == "siren@10":
            assert config.entropy_control.coef == pytest.approx(10.0) and spec.coef == pytest.approx(10.0)
        assert spec is not None


# ---------------------------------------------------------------------------------------------
# a full pass with a stand-in siren-verl
# ---------------------------------------------------------------------------------------------
STUB = r"""#!/usr/bin/env bash
# stand-in for siren-verl: records its arguments, writes what the real one would
echo "$*" >> "$STUB_LOG"
case "$1" in
    train)
        for arg in "$@"; do
            case "$arg" in
                *VERL_FILE_LOGGER_PATH=*) metrics=${arg#*=} ;;
                entropy_control.method=*) method=${arg#*=} ;;
            esac
        done
        if [[ "$method" == "${STUB_FAIL:-}" ]]; then echo "boom in $method"; exit 3; fi
        for step in 1 2 3; do
            printf '{"step": %d, "data": {"entropy/full_mean": %d.5, "critic/score/mean": 0.%d}}\n' \
                "$step" "$step" "$step" >> "$metrics"
        done
        ;;
    plot)
        while [[ $# -gt 0 ]]; do
            if [[ "$1" == "-o" ]]; then echo png > "$2"; fi
            shift
        done
        ;;
esac
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
    out = tmp_path / "exp"
    docs_png = tmp_path / "figure.png"
    proc = run_script([], tmp_path, STEPS="3", OUT_DIR=str(out), DOCS_PNG=str(docs_png), **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["train"] * 5 + ["plot"]
    for entry in METHODS:
        run_dir = out / run_name(entry, "1")
        assert (run_dir / "DONE").is_file()
        assert f"entropy_control.method={entry.split('@')[0]}" in (run_dir / "command.txt").read_text()
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    assert docs_png.read_text() == "png\n"
    summary = (out / "summary.md").read_text()
    # first 3 / last 3 of the stub's 1.5, 2.5, 3.5 are both 2.5 (window 5 > 3 steps)
    assert "| GRPO s1 | `entropy/full_mean` | 3 | 2.5000 | 2.5000 | +0.0000 |" in summary
    assert "| naive β=0.1 s1 | `critic/score/mean` | 3 | 0.2000 | 0.2000 | +0.0000 |" in summary

    # a second pass skips the finished runs and only plots again
    log.write_text("")
    proc = run_script([], tmp_path, STEPS="3", OUT_DIR=str(out), DOCS_PNG="", **env)
    assert proc.returncode == 0, proc.stderr
    assert [c.split()[0] for c in log.read_text().splitlines()] == ["plot"]
    assert proc.stdout.count("skipped") == 5


def test_a_failed_run_stops_the_experiment(tmp_path, stub):
    env, log = stub
    out = tmp_path / "exp"
    proc = run_script([], tmp_path, STEPS="3", OUT_DIR=str(out), DOCS_PNG="", STUB_FAIL="siren", **env)
    assert proc.returncode == 1
    assert "siren-seed1: FAILED" in proc.stderr and "boom in siren" in proc.stderr
    assert (out / "naive-seed1" / "DONE").is_file()
    assert not (out / "siren-seed1" / "DONE").exists()
    assert not (out / "siren-b10-seed1").exists() and not (out / "par-seed1").exists()
    assert "plot" not in log.read_text()


# ---------------------------------------------------------------------------------------------
# summarize.py
# ---------------------------------------------------------------------------------------------
def write_metrics(path: Path, rows: list[dict], truncated_tail: str = "") -> None:
    path.write_text(
        "".join(json.dumps({"step": i + 1, "data": r}) + "\n" for i, r in enumerate(rows)) + truncated_tail
    )


def test_window_means_hand_worked():
    s = load_summarize()
    assert s.window_means([1.0, 2.0, 3.0, 4.0, 10.0], 2) == (1.5, 7.0)
    assert s.window_means([4.0], 5) == (4.0, 4.0)
    with pytest.raises(ValueError):
        s.window_means([], 2)
    with pytest.raises(ValueError):
        s.window_means([1.0], 0)


def test_summary_rows_skip_missing_metrics_and_truncated_tail(tmp_path):
    s = load_summarize()
    path = tmp_path / "metrics.jsonl"
    rows = [{"entropy/full_mean": 3.0 - 0.1 * k, "critic/score/mean": 0.1 * k} for k in range(8)]
    rows[2]["entropy/anchor"] = 2.0
    write_metrics(path, rows, truncated_tail='{"step": 9, "da')
    steps = s.read_metrics(path)
    assert sorted(steps) == list(range(1, 9))
    table = dict(
        (name, (count, first, last))
        for name, count, first, last in s.summary_rows(steps, s.DEFAULT_METRICS, window=3)
    )
    assert set(table) == {"entropy/full_mean", "critic/score/mean", "entropy/anchor"}  # no zeros invented
    count, first, last = table["entropy/full_mean"]
    assert count == 8
    assert first == pytest.approx((3.0 + 2.9 + 2.8) / 3)
    assert last == pytest.approx((2.5 + 2.4 + 2.3) / 3)
    assert table["entropy/anchor"] == (1, 2.0, 2.0)


def test_read_metrics_refuses_a_bad_line_in_the_middle(tmp_path):
    s = load_summarize()
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "data": {}}\nnot json\n{"step": 2, "data": {}}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        s.read_metrics(path)


def test_summarize_cli(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_metrics(a / "metrics.jsonl", [{"entropy/full_mean": v} for v in (3.0, 2.0, 1.0)])
    write_metrics(b / "metrics.jsonl", [{"entropy/full_mean": v} for v in (1.0, 2.0)])
    proc = subprocess.run(
        [sys.executable, str(SUMMARIZE), str(a), str(b), "--labels", "A", "B", "--window", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| A | `entropy/full_mean` | 3 | 3.0000 | 1.0000 | -2.0000 |" in proc.stdout
    assert "| B | `entropy/full_mean` | 2 | 1.0000 | 2.0000 | +1.0000 |" in proc.stdout
    missing = subprocess.run(
        [sys.executable, str(SUMMARIZE), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "no metrics.jsonl" in missing.stderr


# ---------------------------------------------------------------------------------------------
# warm_start.py (the starting policy of INIT=format)
# ---------------------------------------------------------------------------------------------
def load_warm_start():
    spec = importlib.util.spec_from_file_location(
        "entropy_dynamics_warm_start", REPO / "scripts" / "experiments" / "warm_start.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_response_batch_labels_only_the_two_response_tokens():
    ws = load_warm_start()
    input_ids, attention, labels = ws.response_batch([[5, 6, 7], [8]], [20, 21], end_id=2, pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7, 20, 2], [8, 21, 2, 0, 0]]
    assert attention.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert labels.tolist() == [[-100, -100, -100, 20, 2], [-100, 21, 2, -100, -100]]


def test_response_entropies_of_a_known_distribution():
    """A stand-in 'model' with fixed logits: uniform over 4 tokens everywhere except column 2, one-hot
    there. Rows are prompt (2 tokens) + answer + end: the answer token is predicted at column 1
    (entropy ln 4), the end token at column 2 (entropy 0)."""
    import torch

    ws = load_warm_start()

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            b, t = input_ids.shape
            logits = torch.zeros(b, t, 4)
            logits[:, 2, 0] = 1e4
            return type("Out", (), {"logits": logits})()

    batch = ws.response_batch([[1, 1], [3, 3]], [2, 2], end_id=3, pad_id=0)
    first, second = ws.response_entropies(Fixed(), *batch)
    assert first == pytest.approx(math.log(4))
    assert second == pytest.approx(0.0, abs=1e-6)


def test_warm_start_learns_the_format_and_refuses_other_settings(tmp_path):
    """A short warm-up on a freshly built toy: the answer token moves towards uniform-over-digits
    (entropy towards ln 10 from ln V), the end token becomes near-certain; re-running with the
    same settings keeps the folder, other settings are refused."""
    from siren_verl.toy import ensure_toy_assets

    ensure_toy_assets(str(tmp_path / "toy"))
    out = tmp_path / "init-model"
    args = [sys.executable, str(REPO / "scripts" / "experiments" / "warm_start.py"), "--out", str(out),
            "--toy-dir", str(tmp_path / "toy"), "--steps", "60", "--batch-size", "64"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "warm_start.json").read_text())
    measured = record["measured"]
    assert record["settings"]["steps"] == 60
    assert abs(measured["entropy_answer_token"] - math.log(10)) < 0.3
    assert measured["entropy_end_token"] < 0.5
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()

    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "kept" in again.stdout
    other = subprocess.run([*args[:-2], "--batch-size", "32"], capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and "other settings" in other.stderr
