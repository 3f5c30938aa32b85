"""Pure helpers of the siren_sync trainer and the launch: the start-up worker check, the run directory
of the forking-token report, the settings read off verl's config, the Ray start-up, the environment."""

import os
import types

import pytest
from omegaconf import OmegaConf

from siren_verl.methods.config import parse_entropy_control, resolve
from siren_verl.verl_glue.settings import file_logger_path, trainer_settings
from siren_verl.verl_glue.trainer import (
    _as_list,
    check_worker_reports,
    forking_report_dir,
    probe_worker,
)

SIREN = resolve(parse_entropy_control({"method": "siren"}))
PAR = resolve(parse_entropy_control({"method": "par"}))


def _report(registered=True, engines=None):
    return {"plugin_registered": registered, "pid": 123,
            "engines": {"actor_rollout": ("SirenFSDPEngineWithLMHead", True)} if engines is None else engines}


def test_good_workers_pass():
    check_worker_reports([_report(), _report()], SIREN)


def test_worker_without_plugin_stops_the_run_with_the_reason():
    with pytest.raises(RuntimeError, match="plugin is not registered in actor worker rank 1.*entry point"):
        check_worker_reports([_report(), _report(registered=False)], SIREN)


def test_worker_with_verl_engine_stops_a_logits_method():
    plain = {"actor_rollout": ("FSDPEngineWithLMHead", False)}
    with pytest.raises(RuntimeError, match="runs engine .*FSDPEngineWithLMHead.*logits hook"):
        check_worker_reports([_report(engines=plain)], SIREN)
    check_worker_reports([_report(engines=plain)], PAR)  # PAR needs no logits hook


def test_probe_worker_reads_the_engines_of_a_worker_dict():
    engine = type("SirenFSDPEngineWithLMHead", (), {"siren_verl_engine": True})()
    worker = types.SimpleNamespace(actor=types.SimpleNamespace(engine=engine))
    report = probe_worker(types.SimpleNamespace(worker_dict={"actor_rollout": worker}))
    assert report["engines"] == {"actor_rollout": ("SirenFSDPEngineWithLMHead", True)}
    import siren_verl.verl_glue.plugin  # noqa: F401

    assert probe_worker(types.SimpleNamespace(worker_dict={}))["plugin_registered"]


def test_forking_report_dir_follows_verls_file_logger(monkeypatch, tmp_path):
    config = OmegaConf.create({"trainer": {"project_name": "proj", "experiment_name": "fork_test"}})
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(tmp_path / "run" / "metrics.jsonl"))
    assert forking_report_dir(config) == str(tmp_path / "run")
    monkeypatch.delenv("VERL_FILE_LOGGER_PATH")
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", str(tmp_path))
    # the run's own folder, named after the experiment (never shared by the project's experiments)
    assert forking_report_dir(config) == str(tmp_path / "proj" / "fork_test")


def test_as_list_handles_verl_non_tensor_fields():
    import numpy as np

    assert _as_list(np.array(["a", "b"], dtype=object)) == ["a", "b"]
    assert _as_list(["a", "b"]) == ["a", "b"]


def test_trainer_settings_reads_verl_keys():
    from siren_verl.main import compose_config

    config = compose_config(["actor_rollout_ref.model.use_fused_kernels=True", "trainer.use_v1=False"])
    settings = trainer_settings(config)
    assert settings["actor_rollout_ref.model.use_fused_kernels"] is True
    assert settings["trainer.use_v1"] is False
    assert settings["trainer.v1.trainer_mode"] == "siren_sync"
    assert settings["actor_rollout_ref.actor.policy_loss.loss_mode"] == "vanilla"


def test_reward_flags_become_step_metrics_over_real_rows_only():
    import numpy as np

    from siren_verl.verl_glue.trainer import reward_flag_metrics

    fields = {
        "reward_timeout": np.array([True, False, True, False], dtype=object),
        "reward_parse_failure": np.array([False, True, True, True], dtype=object),
    }
    # row 3 is verl's synthetic padding: excluded
    m = reward_flag_metrics({k: list(v) for k, v in fields.items()}, [0, 1, 2])
    assert m["reward/timeouts"] == 2.0
    assert m["reward/parse_failures"] == 2.0
    assert abs(m["reward/timeout_frac"] - 2 / 3) < 1e-12
    assert reward_flag_metrics({}, [0, 1]) == {}


def test_reward_flags_from_reward_loop_extra_fields():
    from siren_verl.verl_glue.trainer import reward_flag_metrics

    # how verl's reward-loop workers store them: each sample's extra_fields["reward_extra_info"]
    extra = [
        {"reward_extra_info": {"reward_timeout": True, "reward_parse_failure": False, "acc": False}},
        {"reward_extra_info": {"reward_timeout": False, "reward_parse_failure": True, "acc": False}},
        {"reward_extra_info": {"reward_timeout": False, "reward_parse_failure": True, "acc": True}},
        {},  # a sample without reward info (e.g. padding): skipped
    ]
    m = reward_flag_metrics({"extra_fields": extra}, [0, 1, 2, 3])
    assert m["reward/timeouts"] == 1.0 and m["reward/parse_failures"] == 2.0
    # a reward function without these flags (the toy reward): nothing logged, never 0
    assert reward_flag_metrics({"extra_fields": [{"reward_extra_info": {"acc": True}}]}, [0]) == {}


def test_logical_ray_resources_only_for_a_cluster_we_start():
    from siren_verl.verl_glue.launch import starts_local_ray, uses_local_ray

    config = OmegaConf.create({"ray_kwargs": {"ray_init": {"address": None}}})
    assert uses_local_ray(config, environ={}) and not uses_local_ray(config, environ={"RAY_ADDRESS": "auto"})
    config.ray_kwargs.ray_init.address = "auto"
    assert not uses_local_ray(config, environ={})
    assert starts_local_ray(None, environ={})
    assert starts_local_ray("local", environ={"RAY_ADDRESS": "http://127.0.0.1:8265"})
    # inside a Ray job (RAY_ADDRESS set) or with an explicit address: connect, pass no num_cpus/num_gpus
    assert not starts_local_ray(None, environ={"RAY_ADDRESS": "127.0.0.1:6379"})
    assert not starts_local_ray("auto", environ={})
    assert not starts_local_ray("127.0.0.1:6379", environ={})


def test_file_logger_path_follows_verls_rules(tmp_path):
    config = OmegaConf.create(
        {
            "trainer": {"logger": ["console", "file"], "project_name": "p", "experiment_name": "e"},
            "ray_kwargs": {"ray_init": {"runtime_env": {"env_vars": {}}}},
        }
    )
    assert file_logger_path(config, environ={}) == os.path.abspath(os.path.join(".", "p", "e.jsonl"))
    assert file_logger_path(config, environ={"VERL_FILE_LOGGER_ROOT": str(tmp_path)}) == str(tmp_path / "p" / "e.jsonl")
    config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH = str(tmp_path / "m.jsonl")
    # the Ray runtime env reaches the worker that logs: it wins over this process's environment
    assert file_logger_path(config, environ={"VERL_FILE_LOGGER_PATH": "/elsewhere.jsonl"}) == str(tmp_path / "m.jsonl")
    config.trainer.logger = "console"
    assert file_logger_path(config, environ={}) is None


def test_earlier_metrics_are_kept_a_resume_as_a_segment_a_fresh_start_set_aside(tmp_path):
    from siren_verl.main import keep_earlier_metrics
    from siren_verl.viz.logs import load_run

    log = tmp_path / "exp.jsonl"
    assert keep_earlier_metrics(str(log), resuming=True) is None  # nothing there yet
    assert keep_earlier_metrics(None, resuming=False) is None  # file logger off
    log.write_text('{"step": 1, "data": {"a": 1.0}}\n')

    # resume: the same run's earlier part becomes a segment that the plot merges back
    moved = keep_earlier_metrics(str(log), resuming=True, now="T1")
    assert moved == str(tmp_path / "exp.until-T1.jsonl") and not log.exists()
    log.write_text('{"step": 2, "data": {"a": 2.0}}\n')  # what the resumed run logs
    assert load_run(log).steps == {1: {"a": 1.0}, 2: {"a": 2.0}}
    log.write_text('{"step": 2, "data": {"a": 2.0}}\n')
    second = keep_earlier_metrics(str(log), resuming=True, now="T1")  # same second: a new name
    assert second == str(tmp_path / "exp.until-T1-2.jsonl")
    log.write_text("")
    assert keep_earlier_metrics(str(log), resuming=True) is None  # an empty file holds nothing

    # fresh start: the earlier run's log and segments move into a folder, out of the new run's way
    log.write_text('{"step": 9, "data": {"a": 9.0}}\n')
    folder = keep_earlier_metrics(str(log), resuming=False, now="T2")
    assert folder == str(tmp_path / "exp.earlier-T2")
    assert sorted(os.listdir(folder)) == ["exp.jsonl", "exp.until-T1-2.jsonl", "exp.until-T1.jsonl"]
    assert sorted(os.listdir(tmp_path)) == ["exp.earlier-T2"]


def test_process_environment_before_verl_is_imported():
    from siren_verl.verl_glue.launch import set_process_environment

    env = {}
    set_process_environment(["trainer.device=cpu", "x=1"], env)
    assert env == {"VERL_PLATFORM": "cpu", "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    env = {"RAY_AUTH_MODE": "token"}
    set_process_environment(["++trainer.device = cpu"], env)  # the user's own value is kept
    assert env["RAY_AUTH_MODE"] == "token" and env["VERL_PLATFORM"] == "cpu"
    env = {}
    set_process_environment(["trainer.device=cuda"], env)
    assert "VERL_PLATFORM" not in env


def test_compose_searches_the_users_folder_then_siren_verls_then_verls(tmp_path):
    from siren_verl.verl_glue.launch import compose_config

    (tmp_path / "mine.yaml").write_text(
        "defaults:\n  - siren_base\n  - _self_\ntrainer:\n  total_epochs: 7\n"
    )
    config = compose_config([], "mine", str(tmp_path))
    assert config.trainer.total_epochs == 7  # the user's yaml
    assert config.trainer.v1.trainer_mode == "siren_sync" and config.entropy_control.method == "none"  # siren-verl's
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"  # verl's ppo_trainer
