"""Shared fixtures for the verl glue tests: one in-process TrainingWorker per module."""

import os

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from siren_verl.testing.tiny import save_tiny_qwen2

    return save_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def dist_env():
    """verl's Worker needs a (world size 1) process-group environment; gloo on CPU."""
    from siren_verl.testing.verl_worker import single_process_dist_env

    env = single_process_dist_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def verl_actor(tiny_model_dir, dist_env):
    from siren_verl.testing.verl_worker import build_actor

    return build_actor(tiny_model_dir, mini_batch_size=8, micro_batch_size=4)
