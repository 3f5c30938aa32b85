"""Controller state travels with verl's checkpoints (docs/methods.md §7): written beside verl's checkpoint of
the same step, atomically, before verl marks the step as the latest; restored in a NEW process
through verl's own resume rules, bit-identically (the next step's values equal an uninterrupted
run's)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import checkpoint_child as cc  # noqa: E402

CHILD = os.path.join(HERE, "checkpoint_child.py")


def _run_steps(trainer, steps):
    for k in range(steps):
        trainer.entropy_controller.observe(cc.step_inputs(k))
    trainer.global_steps = steps


def _resume_in_new_process(ckpt_dir, tmp_path) -> dict:
    out = tmp_path / "resumed.json"
    proc = subprocess.run([sys.executable, CHILD, "resume", str(ckpt_dir), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    ckpt = tmp_path / "ckpt"
    trainer = cc.make_trainer(str(ckpt))
    _run_steps(trainer, 3)
    trainer._save_checkpoint()  # verl's own save + the controller state

    folder = ckpt / "global_step_3"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "3"
    saved = json.loads((folder / "entropy_control.json").read_text())
    assert saved == trainer.entropy_controller.state_dict()
    assert saved["anchor"] is not None and saved["steps_observed"] == 3

    # the uninterrupted run's next step vs a fresh process resuming from the checkpoint
    expected = cc.dump(trainer.entropy_controller, trainer.entropy_controller.observe(cc.step_inputs(3)))
    resumed = _resume_in_new_process(ckpt, tmp_path)
    assert resumed["global_steps"] == 3
    assert json.dumps(resumed["state"], sort_keys=True) == json.dumps(
        json.loads(json.dumps(expected["state"])), sort_keys=True
    )
    assert resumed["scalars"] == expected["scalars"]
    assert resumed["metrics"] == expected["metrics"]
    assert resumed["sample_coef"] == expected["sample_coef"]


def test_a_save_killed_before_verl_marks_the_step_resumes_from_the_previous_one(tmp_path):
    ckpt = tmp_path / "ckpt"
    trainer = cc.make_trainer(str(ckpt))
    _run_steps(trainer, 2)
    trainer._save_checkpoint()
    state_at_2 = trainer.entropy_controller.state_dict()

    crashing = cc.make_trainer(str(ckpt), fail_save=True)
    crashing.entropy_controller = trainer.entropy_controller
    for k in (2, 3):
        crashing.entropy_controller.observe(cc.step_inputs(k))
    crashing.global_steps = 4
    with pytest.raises(RuntimeError, match="killed while saving"):
        crashing._save_checkpoint()
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "2"

    fresh = cc.make_trainer(str(ckpt))
    fresh._load_checkpoint()
    assert fresh.global_steps == 2
    assert fresh.entropy_controller.state_dict() == json.loads(json.dumps(state_at_2))


def test_resuming_a_checkpoint_without_controller_state_fails_loudly(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "global_step_5").mkdir(parents=True)
    (ckpt / "latest_checkpointed_iteration.txt").write_text("5")
    trainer = cc.make_trainer(str(ckpt))
    with pytest.raises(RuntimeError, match="holds no entropy_control.json"):
        trainer._load_checkpoint()


def test_no_checkpoint_starts_fresh(tmp_path):
    trainer = cc.make_trainer(str(tmp_path / "empty"))
    trainer._load_checkpoint()
    assert trainer.global_steps == 0 and trainer.entropy_controller.steps_observed == 0


def test_state_file_survives_sigkill_mid_write(tmp_path):
    path = tmp_path / "entropy_control.json"
    proc = subprocess.Popen([sys.executable, CHILD, "hammer", str(path)])
    try:
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # let it rewrite the file many times
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    state = json.loads(path.read_text())  # never a torn file
    assert state["check"] == state["counter"] * 7 and len(state["payload"]) == 200_000
    assert state["counter"] > 0
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".entropy_control.")]
    assert len(leftovers) <= 1  # at most the temp file the kill interrupted, never read
