"""`compute_score` callable from any context (docs/methods.md §9): a script's top level without a
`__main__` guard, `python -c`, a thread, a notebook-style `exec`, a forked child, a Ray worker.

The script-like contexts run in a real subprocess: the failure they guard against (the judge pool's
worker start re-importing the caller's `__main__`) only shows in a fresh interpreter.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from siren_verl.reward import compute_score
from siren_verl.reward.judge import clear_cache

CALL = 'compute_score("math", r"\\boxed{\\frac{\\sqrt{3}}{2}}", r"\\frac{\\sqrt3}{2}")'
EXPECTED = {"score": 1.0, "acc": True, "pred": r"\frac{\sqrt{3}}{2}", "reward_timeout": 0.0, "reward_parse_failure": 0.0}
SUBPROCESS_TIMEOUT_S = 300


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
    )


def _score_lines(stdout: str) -> list[dict]:
    return [ast.literal_eval(line) for line in stdout.splitlines() if line.startswith("{")]


def test_script_without_main_guard_runs_once(tmp_path):
    script = tmp_path / "score.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            # score.py - no `if __name__ == "__main__":` guard, as most people write it
            print("script body ran")
            from siren_verl.reward import compute_score
            print({CALL})
            """
        )
    )
    proc = _run([str(script)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bootstrapping phase" not in proc.stderr
    assert proc.stdout.count("script body ran") == 1, proc.stdout
    assert _score_lines(proc.stdout) == [EXPECTED]


def test_python_dash_c(tmp_path):
    proc = _run(["-c", f"from siren_verl.reward import compute_score; print({CALL})"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _score_lines(proc.stdout) == [EXPECTED]


def test_notebook_style_exec(tmp_path):
    """A notebook kernel: `__main__` is the kernel's launcher script, cells are exec'd in its namespace."""
    cell = f"from siren_verl.reward import compute_score\nprint({CALL})\n"
    launcher = tmp_path / "kernel_launcher.py"
    launcher.write_text(
        "print('launcher ran')\n"
        f"CELL = {cell!r}\n"
        "exec(compile(CELL, '<ipython-input-1-abc>', 'exec'), globals())\n"
    )
    proc = _run([str(launcher)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("launcher ran") == 1
    assert _score_lines(proc.stdout) == [EXPECTED]


def test_from_a_thread():
    clear_cache()
    out: list[dict] = []
    t = threading.Thread(target=lambda: out.append(eval(CALL, {"compute_score": compute_score})))  # noqa: S307 - our own constant
    t.start()
    t.join(timeout=SUBPROCESS_TIMEOUT_S)
    assert out == [EXPECTED]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_and_parent_both_score():
    clear_cache()
    assert compute_score("math", r"\boxed{x^2+2x+1}", "(x+1)^2")["acc"]  # the parent's pool is up
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a new pool of its own (the parent's pipes are not ours)
        code = 1
        try:
            clear_cache()
            res = compute_score("math", r"\boxed{(x+2)^2}", "x^2+4x+4")
            os.write(write_fd, repr(res).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ast.literal_eval(b"".join(chunks).decode())["acc"] is True
    clear_cache()
    assert compute_score("math", r"\boxed{(x-1)^2}", "x^2-2x+1")["acc"]  # the parent's pool still works


@pytest.mark.slow
def test_ray_worker(tmp_path):
    """A Ray task (verl's reward workers are Ray actors); starts a one-CPU local Ray."""
    pytest.importorskip("ray")
    code = textwrap.dedent(
        f"""\
        import os
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

        @ray.remote(num_cpus=0)
        def score():
            from siren_verl.reward import compute_score
            return {CALL}

        print(ray.get(score.remote(), timeout=240))
        ray.shutdown()
        """
    )
    proc = _run(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _score_lines(proc.stdout) == [EXPECTED]


def test_verl_reward_loop_naive_manager():
    """verl 0.9.1's reward loop (`NaiveRewardManager.run_single`, run concurrently on an asyncio loop
    that calls our sync `compute_score` through `run_in_executor`, i.e. from executor threads)."""
    import asyncio

    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cases = [  # (response, ground truth, expected score)
        (r"so \boxed{50\%}.", "50", 1.0),
        (r"\boxed{\text{5 cm}}", "5", 1.0),
        (r"\boxed{x^2/4+y^2/3=1}", "x^2/16+y^2/12=1/4", 1.0),
        ("The answer is 42.", "42", 0.0),
        (r"\boxed{3}", "4", 0.0),
    ]

    class Tokenizer:  # token id i decodes to response i
        def decode(self, ids, skip_special_tokens=True):
            return cases[int(ids[0])][0]

    cfg = OmegaConf.create({"reward": {"custom_reward_function": {"path": "pkg://siren_verl.reward", "name": "compute_score"}}})
    fn = get_custom_reward_fn(cfg)

    def item(i: int) -> DataProto:
        return DataProto.from_dict(
            tensors={"responses": torch.full((1, 4), i), "attention_mask": torch.ones(1, 4, dtype=torch.long)},
            non_tensors={
                "data_source": np.array(["math"], dtype=object),
                "reward_model": np.array([{"ground_truth": cases[i][1]}], dtype=object),
                "extra_info": np.array([{}], dtype=object),
            },
        )

    async def run_all():
        manager = NaiveRewardManager(cfg, Tokenizer(), fn)
        return await asyncio.gather(*(manager.run_single(item(i)) for i in range(len(cases))))

    clear_cache()
    results = asyncio.run(run_all())
    assert [r["reward_score"] for r in results] == [c[2] for c in cases]
    assert all(r["reward_extra_info"]["reward_timeout"] == 0.0 for r in results)
