"""Generation: problems from verl parquet, the samples file, resume after an interruption, the
CPU (transformers) backend on a tiny model, verl checkpoints (docs/methods.md §9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siren_verl.eval.generation import (
    HFBackend,
    Sample,
    SamplingSettings,
    build_prompt_ids,
    check_or_write_meta,
    generate_samples,
    load_problems,
    merge_shards,
    problem_seed,
    resolve_model_path,
    shard,
    shard_output,
)
from siren_verl.eval.samples_io import SamplesFileError, iter_records, meta_path, read_records


class Interrupt(Exception):
    pass


class FakeBackend:
    """Deterministic stand-in: sample j of a problem answers \\boxed{(seed + j) % 10}."""

    sequences_per_call = 1

    def __init__(self):
        self.seen: list[str] = []

    def generate(self, jobs):
        self.seen += [j.uid for j in jobs]
        return [[Sample(f"x \\boxed{{{(j.seed + i) % 10}}}", 3, "stop") for i in range(j.n)] for j in jobs]


class FakeTokenizer:
    chat_template = "fake"

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return " ".join(m["content"] for m in messages)

    def __call__(self, text, add_special_tokens):
        return {"input_ids": [len(w) for w in text.split()]}


# ---- problems ---------------------------------------------------------------------------------


def test_load_problems(toy_parquet, tmp_path):
    problems = load_problems([toy_parquet])
    assert [p.uid for p in problems] == [f"toy_add/{i}" for i in range(3)] + [
        f"toy_mul/{i}" for i in range(3)
    ]
    p = problems[0]
    assert p.data_source == "toy_add" and p.ground_truth == "2"
    assert p.prompt[0]["role"] == "user" and "\\boxed{}" in p.prompt[0]["content"]
    assert p.extra_info == {"split": "test", "index": 0}
    assert [p.uid for p in load_problems([toy_parquet], benchmarks=["TOY_MUL"])] == [
        f"toy_mul/{i}" for i in range(3)
    ]
    assert len(load_problems([toy_parquet], max_per_benchmark=2)) == 4
    # the same file twice: uids stay unique and stable
    twice = load_problems([toy_parquet, toy_parquet])
    assert len({p.uid for p in twice}) == 12 and twice[6].uid == "toy_add/0#2"
    with pytest.raises(ValueError, match="no problems selected"):
        load_problems([toy_parquet], benchmarks=["aime24"])
    import pandas as pd

    pd.DataFrame({"data_source": ["a"], "prompt": ["q"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="reward_model"):
        load_problems([tmp_path / "bad.parquet"])


def test_shard_and_seed(toy_parquet):
    problems = load_problems([toy_parquet])
    parts = [shard(problems, r, 4) for r in range(4)]
    assert sorted(p.uid for part in parts for p in part) == sorted(p.uid for p in problems)
    with pytest.raises(ValueError, match="shard_index=4"):
        shard(problems, 4, 4)
    assert problem_seed(0, "a/1") == problem_seed(0, "a/1") != problem_seed(1, "a/1")
    assert 0 <= problem_seed(7, "x") < 2**31


def test_settings_validation():
    for bad, match in [
        (dict(n=0), "n=0"),
        (dict(top_p=0.0), "top_p=0.0"),
        (dict(top_p=1.5), "top_p=1.5"),
        (dict(temperature=-1), "temperature=-1"),
        (dict(top_k=0), "top_k=0"),
        (dict(max_tokens=0), "max_tokens=0"),
        (dict(backend="sglang"), "backend='sglang'"),
    ]:
        with pytest.raises(ValueError, match=match):
            SamplingSettings(model="m", **bad).validate()


# ---- samples file -----------------------------------------------------------------------------


def test_partial_last_line_is_cut_off(tmp_path):
    f = tmp_path / "s.jsonl"
    good = {"uid": "a", "data_source": "d", "ground_truth": "1", "responses": ["x"]}
    f.write_text(json.dumps(good) + "\n" + json.dumps(dict(good, uid="b"))[:25])
    assert [r["uid"] for r in read_records(f)] == ["a"]
    assert f.read_text().count("\n") == 1 and not f.read_text().endswith("\n")  # untouched
    read_records(f, repair=True)
    assert f.read_text() == json.dumps(good) + "\n"
    f.write_text("garbage\n" + json.dumps(good) + "\n")
    with pytest.raises(SamplesFileError, match=":1: not valid JSON"):
        read_records(f)
    f.write_text(json.dumps({"uid": "a"}) + "\n")
    with pytest.raises(SamplesFileError, match="not a samples record"):
        read_records(f)
    g = tmp_path / "t.jsonl"
    g.write_text(json.dumps(good) + "\n")
    f.write_text(json.dumps(good) + "\n")
    with pytest.raises(SamplesFileError, match="appears twice"):
        list(iter_records([f, g]))


# ---- resume -----------------------------------------------------------------------------------


def test_resume_after_exception_never_regenerates(toy_parquet, tmp_path):
    problems = load_problems([toy_parquet])
    settings = SamplingSettings(model="fake", n=4, seed=3)
    out = tmp_path / "samples.jsonl"

    def stop_after_two(uid):
        if uid == problems[1].uid:
            raise Interrupt

    first = FakeBackend()
    with pytest.raises(Interrupt):
        generate_samples(
            problems, first, FakeTokenizer(), settings, out, progress=False, on_problem_written=stop_after_two
        )
    assert [r["uid"] for r in read_records(out)] == [p.uid for p in problems[:2]]
    # a crash in the middle of the next write leaves half a line
    with open(out, "a") as f:
        f.write('{"uid": "toy_add/2", "data_sou')
    second = FakeBackend()
    stats = generate_samples(problems, second, FakeTokenizer(), settings, out, progress=False)
    assert stats == {"total": 6, "skipped": 2, "generated": 4}
    assert second.seen == [p.uid for p in problems[2:]]
    records = read_records(out)
    assert [r["uid"] for r in records] == [p.uid for p in problems]
    # identical to an uninterrupted run (per-problem seeds)
    ref = tmp_path / "ref.jsonl"
    generate_samples(problems, FakeBackend(), FakeTokenizer(), settings, ref, progress=False)
    assert read_records(ref) == records
    # a third run has nothing to do
    third = FakeBackend()
    assert generate_samples(problems, third, FakeTokenizer(), settings, out, progress=False)["generated"] == 0
    assert third.seen == []


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "s.jsonl"
    s1 = SamplingSettings(model="m", n=4)
    check_or_write_meta(out, s1)
    out.write_text(
        json.dumps({"uid": "a", "data_source": "d", "ground_truth": "1", "responses": ["x"]}) + "\n"
    )
    check_or_write_meta(out, s1)  # same settings: fine
    with pytest.raises(SamplesFileError, match="n: 4 -> 8"):
        check_or_write_meta(out, SamplingSettings(model="m", n=8))
    check_or_write_meta(out, SamplingSettings(model="m", n=8), allow_change=True)
    assert json.loads(meta_path(out).read_text())["n"] == 8


def test_merge_shards(toy_parquet, tmp_path):
    problems = load_problems([toy_parquet])
    out = tmp_path / "s.jsonl"
    settings = SamplingSettings(model="fake", n=2)
    for r in range(2):
        generate_samples(
            shard(problems, r, 2),
            FakeBackend(),
            FakeTokenizer(),
            settings,
            shard_output(out, r, 2),
            progress=False,
        )
    merge_shards(out, problems, 2)
    assert [r["uid"] for r in read_records(out)] == [p.uid for p in problems]
    assert not shard_output(out, 0, 2).exists()


# ---- the transformers backend on a tiny model ---------------------------------------------------


def test_hf_backend_resume_matches_uninterrupted_run(tiny_model, toy_parquet, tmp_path, one_cpu_thread):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    problems = load_problems([toy_parquet])
    settings = SamplingSettings(model=str(tiny_model), n=5, max_tokens=12, seed=11)
    backend = HFBackend(str(tiny_model), tok, settings, batch_size=2)

    ids = build_prompt_ids(tok, problems[0].prompt)
    assert tok.decode(ids).startswith("<|im_start|>user\n") and tok.decode(ids).endswith(
        "<|im_start|>assistant\n"
    )

    full = tmp_path / "full.jsonl"
    generate_samples(problems, backend, tok, settings, full, progress=False)

    def stop(uid):
        if uid == problems[2].uid:
            raise Interrupt

    part = tmp_path / "part.jsonl"
    with pytest.raises(Interrupt):
        generate_samples(problems, backend, tok, settings, part, progress=False, on_problem_written=stop)
    assert len(read_records(part)) == 3
    stats = generate_samples(problems, backend, tok, settings, part, progress=False)
    assert stats["generated"] == 3 and stats["skipped"] == 3
    assert read_records(part) == read_records(full)

    rec = read_records(full)[0]
    assert len(rec["responses"]) == 5 and len(set(rec["responses"])) > 1  # sampled, not greedy
    assert all(1 <= t <= 12 for t in rec["num_tokens"])
    assert all(f in ("stop", "length") for f in rec["finish_reasons"])
    for text, t, f in zip(rec["responses"], rec["num_tokens"], rec["finish_reasons"], strict=True):
        assert (f == "length") == (t == 12) or f == "stop"
        assert "<|im_end|>" not in text


# ---- model paths --------------------------------------------------------------------------------


def _fake_fsdp_checkpoint(model_dir: Path, root: Path) -> Path:
    """global_step_N/actor as verl's FSDP checkpoint manager writes it with world size 1."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    actor = root / "global_step_3" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.save(model.state_dict(), actor / "model_world_size_1_rank_0.pt")
    (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 1}))
    AutoConfig.from_pretrained(model_dir).save_pretrained(actor / "huggingface")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(actor / "huggingface")
    return actor.parent


def test_resolve_model_path(tiny_model, tmp_path):
    assert resolve_model_path(str(tiny_model)) == str(tiny_model)
    assert resolve_model_path("Qwen/Qwen2.5-Math-7B") == "Qwen/Qwen2.5-Math-7B"  # hub names pass through
    step = _fake_fsdp_checkpoint(tiny_model, tmp_path / "ckpt")
    with pytest.raises(ValueError) as e:
        resolve_model_path(str(step))
    msg = str(e.value)
    assert "python -m verl.model_merger merge --backend fsdp --local_dir" in msg
    assert str(step / "actor") in msg and "--merge-checkpoint" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a Hugging Face model folder"):
        resolve_model_path(str(tmp_path / "empty"))


@pytest.mark.slow
def test_merge_verl_checkpoint_with_verls_merger(tiny_model, tmp_path):
    """Runs verl's own `python -m verl.model_merger merge` on an FSDP checkpoint layout."""
    import torch
    from safetensors.torch import load_file

    step = _fake_fsdp_checkpoint(tiny_model, tmp_path / "ckpt")
    merged = resolve_model_path(str(step), merge=True)
    assert merged == str(step / "actor" / "huggingface_merged")
    assert resolve_model_path(str(step)) == merged  # found next time without merging
    want = load_file(str(tiny_model / "model.safetensors"))
    got = load_file(str(Path(merged) / "model.safetensors"))
    assert want.keys() == got.keys()
    for k in want:  # verl's merger may store a lower precision (bf16): compare in the stored dtype
        torch.testing.assert_close(got[k], want[k].to(got[k].dtype))


# ---- the vLLM backend's use of the vLLM API (vLLM itself is GPU-only: a recording stand-in) -----


def test_vllm_backend_request_mapping(monkeypatch):
    import sys
    import types
    from types import SimpleNamespace

    from siren_verl.eval.generation import Job, VLLMBackend

    made = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            made["llm"] = kw
            self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=100))

        def generate(self, prompts, sampling_params, use_tqdm):
            made["prompts"], made["params"] = prompts, sampling_params
            return [
                SimpleNamespace(
                    outputs=[
                        SimpleNamespace(
                            text=f"{i}-{j}", token_ids=[1] * (j + 1), finish_reason="length" if j else "stop"
                        )
                        for j in range(p.kw["n"])
                    ]
                )
                for i, p in enumerate(sampling_params)
            ]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    settings = SamplingSettings(
        model="m", n=3, temperature=0.6, top_p=0.95, max_tokens=64, seed=5, backend="vllm"
    )
    backend = VLLMBackend("/models/m", settings, tensor_parallel_size=2, max_model_len=None)
    assert (
        made["llm"]["tensor_parallel_size"] == 2
        and made["llm"]["seed"] == 5
        and made["llm"]["model"] == "/models/m"
    )
    out = backend.generate([Job("a", [1] * 10, 111, 3), Job("b", [1] * 60, 222, 3)])
    assert made["prompts"] == [{"prompt_token_ids": [1] * 10}, {"prompt_token_ids": [1] * 60}]
    a, b = (p.kw for p in made["params"])
    assert a == dict(n=3, temperature=0.6, top_p=0.95, top_k=-1, max_tokens=64, seed=111)
    assert b["max_tokens"] == 40 and b["seed"] == 222  # clamped to the context left: 100 - 60
    assert [s.finish_reason for s in out[0]] == ["stop", "length", "length"]
    assert [s.num_tokens for s in out[1]] == [1, 2, 3] and out[1][0].text == "1-0"
    with pytest.raises(ValueError, match="problem c: prompt of 100 tokens leaves no room"):
        backend.generate([Job("c", [1] * 100, 1, 1)])
