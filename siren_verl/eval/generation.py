"""Sampling n responses per problem for evaluation (docs/methods.md §9).

Two backends behind one interface (`Backend.generate(jobs) -> samples per job`):
- `vllm`: vLLM offline inference on GPU (imported lazily; tensor parallel inside one process, data
  parallel as one process per GPU group, see `run_data_parallel`).
- `hf`: transformers `generate` with sampling, for CPU (the path CI tests on a tiny model).

Input is verl parquet as written by `siren-verl prepare-data` (columns `data_source`, `prompt` (chat
list), `reward_model.ground_truth`, `extra_info`); the tokenizer's chat template turns the chat into
the prompt. Output is the samples JSONL of `siren_verl.eval.samples_io` (one line per problem),
appended as problems finish; a rerun skips every problem already in the file.

Every problem draws from its own seed (derived from the run seed and the problem uid), so the
samples of a problem do not depend on which other problems ran before it or in the same batch
(resume and sharding give the same samples for the same backend and hardware).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from siren_verl.eval.samples_io import (
    RecordWriter,
    SamplesFileError,
    meta_path,
    read_records,
    read_uids,
    to_jsonable,
    write_records_atomic,
)

# ---------------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    uid: str
    data_source: str
    prompt: list[dict]  # chat messages
    ground_truth: str
    extra_info: dict = field(default_factory=dict)


REQUIRED_COLUMNS = ("data_source", "prompt", "reward_model")


def load_problems(
    paths: Sequence[str | os.PathLike],
    benchmarks: Sequence[str] | None = None,
    max_per_benchmark: int | None = None,
) -> list[Problem]:
    """Problems from verl parquet files, in file order. `benchmarks` keeps only those data_source
    values (case-insensitive); `max_per_benchmark` keeps the first N of each (smoke runs).

    uid = "<data_source>/<extra_info.index>" (or "<data_source>/<file>:<row>" without an index);
    a repeated uid gets "#2", "#3", ... so every problem has a stable, unique id.
    """
    import pandas as pd

    if max_per_benchmark is not None and max_per_benchmark < 1:
        raise ValueError(f"max_per_benchmark={max_per_benchmark}: must be >= 1")
    wanted = {b.lower() for b in benchmarks} if benchmarks else None
    problems: list[Problem] = []
    seen_uids: dict[str, int] = {}
    per_bench: dict[str, int] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist")
        df = pd.read_parquet(path)
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; expected verl parquet with columns "
                f"{list(REQUIRED_COLUMNS)} + extra_info (as written by `siren-verl prepare-data`)"
            )
        for row_no, row in enumerate(df.to_dict("records")):
            ds = str(row["data_source"])
            if wanted is not None and ds.lower() not in wanted:
                continue
            if max_per_benchmark is not None and per_bench.get(ds, 0) >= max_per_benchmark:
                continue
            rm = to_jsonable(row["reward_model"])
            if not isinstance(rm, dict) or "ground_truth" not in rm:
                raise ValueError(f"{path} row {row_no}: reward_model has no ground_truth ({rm!r})")
            gt = rm["ground_truth"]
            prompt = to_jsonable(row["prompt"])
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            if not (isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt)):
                raise ValueError(f"{path} row {row_no}: prompt must be a chat list of {{role, content}}")
            extra = to_jsonable(row.get("extra_info")) or {}
            if not isinstance(extra, dict):
                extra = {"extra_info": extra}
            base = f"{ds}/{extra['index']}" if "index" in extra else f"{ds}/{path.stem}:{row_no}"
            count = seen_uids.get(base, 0) + 1
            seen_uids[base] = count
            uid = base if count == 1 else f"{base}#{count}"
            problems.append(Problem(uid, ds, prompt, gt if isinstance(gt, str) else json.dumps(gt), extra))
            per_bench[ds] = per_bench.get(ds, 0) + 1
    if not problems:
        raise ValueError(f"no problems selected from {[str(p) for p in paths]} (benchmarks={benchmarks})")
    return problems


def shard(problems: Sequence[Problem], shard_index: int, num_shards: int) -> list[Problem]:
    """Round-robin share `shard_index` of `num_shards` (data parallel generation)."""
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards}: must be >= 1")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index}: must be in [0, num_shards={num_shards})")
    return [p for i, p in enumerate(problems) if i % num_shards == shard_index]


def problem_seed(run_seed: int, uid: str) -> int:
    """A per-problem seed in [0, 2**31) from the run seed and the problem uid."""
    digest = hashlib.sha256(f"{run_seed}:{uid}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


@dataclass
class SamplingSettings:
    """What decides the samples; stored in `<samples>.meta.json`, checked on resume."""

    model: str
    n: int = 16
    temperature: float = 0.6  # docs/methods.md §9
    top_p: float = 0.95
    top_k: int = -1  # -1: off
    max_tokens: int = 32768
    seed: int = 0
    backend: str = "hf"

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError(f"n={self.n}: must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k == 0 or self.top_k < -1:
            raise ValueError(f"top_k={self.top_k}: must be -1 (off) or >= 1")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens}: must be >= 1")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend={self.backend!r}: must be 'hf' or 'vllm'")


def check_or_write_meta(
    samples_path: Path,
    settings: SamplingSettings,
    allow_change: bool = False,
    output_option: str = "--output",
) -> None:
    """Refuse to append samples drawn with different settings to an existing samples file
    (`output_option`: the command-line option that named it, for the message)."""
    mp = meta_path(samples_path)
    current = dataclasses.asdict(settings)
    if mp.exists() and samples_path.exists() and samples_path.stat().st_size > 0:
        old = json.loads(mp.read_text())
        diff = {k: (old.get(k), v) for k, v in current.items() if old.get(k) != v}
        if diff and not allow_change:
            detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise SamplesFileError(
                f"{samples_path} was generated with other settings ({detail}); use another {output_option} "
                f"or pass --allow-settings-change to append anyway"
            )
    mp.parent.mkdir(parents=True, exist_ok=True)
    mp.write_text(json.dumps(current, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    uid: str
    prompt_ids: list[int]
    seed: int
    n: int


@dataclass(frozen=True)
class Sample:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (end of sequence) or "length" (hit max_tokens)


class Backend(Protocol):
    # how many sequences one `generate` call should carry (resume granularity vs throughput)
    sequences_per_call: int

    def generate(self, jobs: Sequence[Job]) -> list[list[Sample]]: ...


def _eos_ids(tokenizer, generation_config=None) -> list[int]:
    ids: list[int] = []
    for src in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if src is None:
            continue
        for i in src if isinstance(src, (list, tuple)) else [src]:
            if i not in ids:
                ids.append(int(i))
    return ids


class HFBackend:
    """transformers `generate` with sampling; one problem per call, its n samples in batches of
    `batch_size` sequences. Meant for CPU smoke runs and CI."""

    sequences_per_call = 1  # one problem per call: a finished problem is written at once

    def __init__(
        self,
        model_path: str,
        tokenizer,
        settings: SamplingSettings,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "auto",
        cpu_threads: int | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        if cpu_threads is not None:
            if cpu_threads < 1:
                raise ValueError(f"cpu_threads={cpu_threads}: must be >= 1")
            # small models on a busy CPU run far faster on one thread than on contended threads
            torch.set_num_threads(cpu_threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = {"auto": torch.float32 if device == "cpu" else torch.bfloat16}.get(dtype)
        if torch_dtype is None:
            torch_dtype = getattr(torch, dtype, None)
            if not isinstance(torch_dtype, torch.dtype):
                raise ValueError(f"dtype={dtype!r}: must be auto, float32, bfloat16 or float16")
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device).eval()
        self.device = device
        self.tokenizer = tokenizer
        self.settings = settings
        self.batch_size = batch_size
        self.eos_ids = _eos_ids(tokenizer, self.model.generation_config)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    def _max_new_tokens(self, prompt_len: int) -> int:
        limit = self.settings.max_tokens
        if self.max_positions is not None:
            if prompt_len >= self.max_positions:
                raise ValueError(
                    f"prompt of {prompt_len} tokens does not fit the model's max_position_embeddings="
                    f"{self.max_positions}"
                )
            limit = min(limit, self.max_positions - prompt_len)
        return limit

    def generate(self, jobs: Sequence[Job]) -> list[list[Sample]]:
        torch = self.torch
        s = self.settings
        out: list[list[Sample]] = []
        for job in jobs:
            ids = torch.tensor([job.prompt_ids], dtype=torch.long, device=self.device)
            max_new = self._max_new_tokens(len(job.prompt_ids))
            samples: list[Sample] = []
            for chunk_no, start in enumerate(range(0, job.n, self.batch_size)):
                b = min(self.batch_size, job.n - start)
                torch.manual_seed(job.seed + chunk_no)
                sampling = {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p}
                if s.temperature == 0:
                    sampling = {"do_sample": False}
                with torch.no_grad():
                    seqs = self.model.generate(
                        input_ids=ids.expand(b, -1),
                        attention_mask=torch.ones(b, ids.shape[1], dtype=torch.long, device=self.device),
                        max_new_tokens=max_new,
                        top_k=max(s.top_k, 0),  # 0 switches top-k off in transformers
                        num_return_sequences=1,
                        pad_token_id=self.pad_id,
                        eos_token_id=self.eos_ids or None,
                        **sampling,
                    )
                for row in seqs[:, ids.shape[1] :].tolist():
                    samples.append(self._to_sample(row))
            out.append(samples)
        return out

    def _to_sample(self, generated: list[int]) -> Sample:
        end = next((i for i, t in enumerate(generated) if t in self.eos_ids), None)
        tokens = generated if end is None else generated[: end + 1]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Sample(text, len(tokens), "length" if end is None else "stop")


def _vllm_max_model_len(llm, configured: int | None) -> int | None:
    """The engine's context length (attribute paths differ between vLLM engine versions)."""
    engine = getattr(llm, "llm_engine", None)
    for cfg in (
        getattr(engine, "model_config", None),
        getattr(getattr(engine, "vllm_config", None), "model_config", None),
    ):
        value = getattr(cfg, "max_model_len", None)
        if isinstance(value, int):
            return value
    return configured


class VLLMBackend:
    """vLLM offline inference (GPU). Problems go to `LLM.generate` in chunks of about
    `sequences_per_call` sequences; each problem's n samples come from one request with
    `SamplingParams(n=n, seed=<problem seed>)`."""

    def __init__(
        self,
        model_path: str,
        settings: SamplingSettings,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        enforce_eager: bool = False,
        trust_remote_code: bool = False,
        sequences_per_call: int = 4096,
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:  # pragma: no cover - GPU-only dependency
            raise RuntimeError(
                "the vllm backend needs vLLM: pip install 'siren-verl[gpu]' (or use --backend hf on CPU)"
            ) from e
        self._SamplingParams = SamplingParams
        self.settings = settings
        self.sequences_per_call = sequences_per_call
        kwargs: dict[str, Any] = {
            "model": model_path,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "dtype": dtype,
            "seed": settings.seed,
            "enforce_eager": enforce_eager,
            "trust_remote_code": trust_remote_code,
            "enable_prefix_caching": True,  # the n samples of a problem share its prompt
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = LLM(**kwargs)
        self.max_model_len = _vllm_max_model_len(self.llm, max_model_len)

    def generate(self, jobs: Sequence[Job]) -> list[list[Sample]]:
        s = self.settings
        prompts, params = [], []
        for job in jobs:
            room = s.max_tokens if self.max_model_len is None else self.max_model_len - len(job.prompt_ids)
            if room < 1:
                raise ValueError(
                    f"problem {job.uid}: prompt of {len(job.prompt_ids)} tokens leaves no room in "
                    f"max_model_len={self.max_model_len}"
                )
            prompts.append({"prompt_token_ids": list(job.prompt_ids)})
            params.append(
                self._SamplingParams(
                    n=job.n,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    top_k=s.top_k,
                    max_tokens=min(s.max_tokens, room),
                    seed=job.seed,
                )
            )
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        result = []
        for out in outputs:
            result.append(
                [
                    Sample(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop")
                    for c in out.outputs
                ]
            )
        return result


# ---------------------------------------------------------------------------------------------
# the resumable loop
# ---------------------------------------------------------------------------------------------


def build_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The tokenizer's chat template with the generation prompt, then tokens (no extra specials:
    the template already holds them)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; evaluation prompts are chat lists")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _chunks(problems: Sequence[Problem], n: int, sequences_per_call: int) -> list[list[Problem]]:
    per_call = max(1, sequences_per_call // max(n, 1))
    return [list(problems[i : i + per_call]) for i in range(0, len(problems), per_call)]


def generate_samples(
    problems: Sequence[Problem],
    backend: Backend,
    tokenizer,
    settings: SamplingSettings,
    output: str | os.PathLike,
    done_uids: set[str] | None = None,
    progress: bool = True,
    on_problem_written: Callable[[str], None] | None = None,
) -> dict:
    """Sample every problem not yet in `output` (or in `done_uids`) and append its record.

    Returns counts {"total", "skipped", "generated"}. `on_problem_written` is called after each
    record is on disk (used by tests to interrupt a run).
    """
    from tqdm.auto import tqdm

    output = Path(output)
    done = read_uids(output, repair=True) | set(done_uids or ())
    todo = [p for p in problems if p.uid not in done]
    stats = {"total": len(problems), "skipped": len(problems) - len(todo), "generated": 0}
    bar = tqdm(
        total=len(problems), initial=stats["skipped"], desc="generate", unit="problem", disable=not progress
    )
    try:
        with RecordWriter(output) as writer:
            for chunk in _chunks(todo, settings.n, backend.sequences_per_call):
                jobs = [
                    Job(
                        p.uid,
                        build_prompt_ids(tokenizer, p.prompt),
                        problem_seed(settings.seed, p.uid),
                        settings.n,
                    )
                    for p in chunk
                ]
                results = backend.generate(jobs)
                if len(results) != len(chunk):
                    raise RuntimeError(f"backend returned {len(results)} results for {len(chunk)} problems")
                for p, job, samples in zip(chunk, jobs, results, strict=True):
                    writer.write(
                        {
                            "uid": p.uid,
                            "data_source": p.data_source,
                            "ground_truth": p.ground_truth,
                            "prompt": p.prompt,
                            "extra_info": p.extra_info,
                            "seed": job.seed,
                            "prompt_tokens": len(job.prompt_ids),
                            "responses": [s.text for s in samples],
                            "num_tokens": [s.num_tokens for s in samples],
                            "finish_reasons": [s.finish_reason for s in samples],
                        }
                    )
                    stats["generated"] += 1
                    bar.update(1)
                    if on_problem_written is not None:
                        on_problem_written(p.uid)
    finally:
        bar.close()
    return stats


# ---------------------------------------------------------------------------------------------
# model paths: HF folders and verl checkpoints
# ---------------------------------------------------------------------------------------------

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _is_hf_model_dir(d: Path) -> bool:
    return (d / "config.json").exists() and any(
        f.name.endswith(_WEIGHT_SUFFIXES) and not f.name.startswith("model_world_size_") for f in d.iterdir()
    )


def merge_command(actor_dir: Path, target_dir: Path, backend: str = "fsdp") -> list[str]:
    """verl's own converter (verl/model_merger/__main__.py), e.g.
    python -m verl.model_merger merge --backend fsdp --local_dir CKPT/global_step_N/actor
        --target_dir CKPT/global_step_N/actor/huggingface_merged
    """
    return [
        sys.executable, "-m", "verl.model_merger", "merge",
        "--backend", backend, "--local_dir", str(actor_dir), "--target_dir", str(target_dir),
    ]  # fmt: skip


def resolve_model_path(path: str, merge: bool = False) -> str:
    """An HF model folder (or hub-style name) as is; a verl checkpoint (`global_step_N` or its
    `actor/` folder) -> its HF weights: `actor/huggingface` when verl saved full weights there
    (checkpoint.save_contents with hf_model), else the merged folder `actor/huggingface_merged`,
    created with verl's model merger when `merge=True`."""
    p = Path(path)
    if not p.is_dir():
        return path  # a hub name or a file vLLM/transformers understand
    if _is_hf_model_dir(p):
        return str(p)
    actor = p / "actor" if (p / "actor").is_dir() else p
    is_fsdp = (actor / "fsdp_config.json").exists() or any(actor.glob("model_world_size_*_rank_*.pt"))
    is_megatron = (actor / "dist_ckpt").is_dir() or (actor / "model").is_dir()
    if not (is_fsdp or is_megatron):
        raise ValueError(
            f"model={path}: neither a Hugging Face model folder (config.json + weights) nor a verl checkpoint"
        )
    for cand in (actor / "huggingface", actor / "huggingface_merged"):
        if cand.is_dir() and _is_hf_model_dir(cand):
            return str(cand)
    target = actor / "huggingface_merged"
    cmd = merge_command(actor, target, "fsdp" if is_fsdp else "megatron")
    if not merge:
        raise ValueError(
            f"model={path} is a verl checkpoint without Hugging Face weights; convert it with verl's "
            f"model merger first:\n  python {' '.join(cmd[1:])}\n"
            f"or pass --merge-checkpoint to run that command now"
        )
    print("merging verl checkpoint:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    if not _is_hf_model_dir(target):
        raise RuntimeError(f"verl's model merger did not produce Hugging Face weights in {target}")
    return str(target)


# ---------------------------------------------------------------------------------------------
# data parallel: one process per GPU group
# ---------------------------------------------------------------------------------------------


def shard_output(output: Path, shard_index: int, num_shards: int) -> Path:
    return output.with_name(f"{output.name}.shard{shard_index}of{num_shards}")


def run_data_parallel(
    child_argv: list[str],
    output: Path,
    problems: Sequence[Problem],
    data_parallel_size: int,
    tensor_parallel_size: int,
    gpus: Sequence[str] | None,
) -> None:
    """Launch `data_parallel_size` generate processes (each with --shard-index/--num-shards and its
    own CUDA_VISIBLE_DEVICES slice of `tensor_parallel_size` GPUs), wait, then merge their shard
    files into `output` in problem order. Shard files are removed after a successful merge; a
    rerun resumes every shard from its own file and from `output`."""
    if gpus is not None and len(gpus) < data_parallel_size * tensor_parallel_size:
        raise ValueError(
            f"data_parallel_size={data_parallel_size} x tensor_parallel_size={tensor_parallel_size} "
            f"needs {data_parallel_size * tensor_parallel_size} GPUs, {len(gpus)} visible"
        )
    procs = []
    for r in range(data_parallel_size):
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(
                gpus[r * tensor_parallel_size : (r + 1) * tensor_parallel_size]
            )
        argv = child_argv + ["--shard-index", str(r), "--num-shards", str(data_parallel_size)]
        procs.append(
            subprocess.Popen([sys.executable, "-m", "siren_verl.eval.cli", "generate", *argv], env=env)
        )
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"data-parallel generate processes failed with exit codes {codes}")
    merge_shards(output, problems, data_parallel_size)


def merge_shards(output: Path, problems: Sequence[Problem], num_shards: int) -> None:
    by_uid = {r["uid"]: r for r in read_records(output)}
    shard_files = [shard_output(output, r, num_shards) for r in range(num_shards)]
    for f in shard_files:
        for rec in read_records(f):
            by_uid.setdefault(rec["uid"], rec)
    order = [p.uid for p in problems if p.uid in by_uid]
    extra = [u for u in by_uid if u not in set(order)]
    write_records_atomic(output, (by_uid[u] for u in order + extra))
    for f in shard_files:
        if f.exists():
            f.unlink()
        mp = meta_path(f)
        if mp.exists():
            mp.unlink()
