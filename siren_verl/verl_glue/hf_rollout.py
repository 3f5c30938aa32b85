"""`rollout.name=hf`: a DEVELOPMENT rollout backend that generates with plain transformers.

It exists so verl's real trainer runs end to end on a machine without a GPU (CI, a laptop, the
quickstart). vLLM stays the production rollout: this backend is slow on anything but tiny models,
keeps a second copy of the weights in its own process, and supports hybrid (colocated) mode only.

Three pieces plug into verl 0.9.1's server-mode rollout interfaces (no verl source changed):

* `HFGenerationServer` -- a Ray actor; the "server" the agent loop calls through verl's load
  balancer: `generate(prompt_ids, sampling_params, request_id, ...) -> TokenOutput`. Concurrent
  requests are micro-batched: a short collection window, then one left-padded batched decode with a
  KV cache; per-row temperature / top-p / top-k / repetition penalty, EOS and stop-token stops,
  `max_tokens` from the config when the request lacks it, per-token log-probs of the sampling
  distribution (vLLM's `processed_logprobs`), abort / resume for partial rollouts.
  Reproducible: each response is drawn from its own generator, seeded by (rollout.seed, training
  step, the request's `priority` -- verl's row index in the step's batch, i.e. prompt and sample
  index, which reaches this server only as the `det-<priority>` request id of
  `rollout.full_determinism=True`, see `priority_from_request_id` --, the prompt tokens, and the
  k-th arrival of that same key), never from one generator
  serving requests in arrival order; the same settings and seed give the same responses however
  the requests are ordered or batched (`request_seed`).
* `HFReplica` -- a `RolloutReplica`: `launch_servers()` starts one server per replica on the node of
  the replica's first worker.
* `HFServerAdapter` -- the `BaseRollout` that lives in verl's `ActorRolloutRefWorker`: on each weight
  sync (checkpoint engine `naive`, what the V1 sync trainer uses) every rank drains the FSDP engine's
  full-tensor generator (a collective) and the replica's rank 0 ships the tensors to its server in
  buckets of `checkpoint_engine.update_weights_bucket_megabytes` (copied into the model bucket by
  bucket; the sync fails loudly on an unknown or a missing tensor name).

Options (all optional) under `actor_rollout_ref.rollout.engine_kwargs.hf`:
  `dtype` (default "float32"), `attn_implementation` (default: the actor's
  `model.override_config.attn_implementation`, else "sdpa"), `num_threads` (torch threads in the
  server process; default: leave torch's), `batch_wait_ms` (collection window, default 5),
  `device` (default "cpu").

`register()` adds the backend to verl's registries; the plugin entry point calls it in every process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf"
SERVER_NAME_PREFIX = "siren_hf_server_"

# sampling parameters understood by the server; any other key must carry its neutral value
_NEUTRAL_SAMPLING_PARAMS = {
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "min_p": 0.0,
    "n": 1,
    "skip_special_tokens": None,  # decoding is the caller's business: accepted, ignored
    "spaces_between_special_tokens": None,
    "detokenize": None,
    "include_stop_str_in_output": None,
}
_KNOWN_SAMPLING_PARAMS = {
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "logprobs",
    "max_tokens",
    "max_new_tokens",
    "ignore_eos",
    "stop_token_ids",
    "seed",
    "min_tokens",
}
GREEDY_TEMPERATURE = 1e-5  # below this a request is greedy, as in vLLM


# ----------------------------------------------------------------------------------------------
# Pure tensor helpers (tested against brute force in tests/unit)
# ----------------------------------------------------------------------------------------------


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token lists -> (input_ids, attention_mask, position_ids), each [B, L].

    Positions count real tokens only (0 at each row's first real token), so a left-padded row sees
    exactly the positions it would see alone.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("left_pad: every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """HF/vLLM repetition penalty: for tokens already seen (prompt or output), divide positive
    logits by the row's penalty and multiply negative ones by it. `seen` is a [B, V] bool mask,
    `penalty` a [B] tensor (1.0 = off)."""
    p = penalty.to(logits.dtype)[:, None]
    penalised = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, penalised, logits)


def filter_logits(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (-inf) everything outside each row's top-k and top-p sets, as vLLM does.

    `top_k` [B] (<= 0 or >= V: off), `top_p` [B] (>= 1: off). Top-k is applied first; top-p then
    keeps the smallest set of highest-probability tokens whose mass reaches p (the most likely token
    always stays). Ties at a threshold are kept.
    """
    vocab = scaled.shape[-1]
    out = scaled.clone()
    k = top_k.clone()
    k[(k <= 0) | (k > vocab)] = vocab
    if bool((k < vocab).any()):
        sorted_desc = torch.sort(out, dim=-1, descending=True).values
        kth = sorted_desc.gather(-1, (k - 1).clamp(min=0)[:, None])
        out = out.masked_fill(out < kth, float("-inf"))
    if bool((top_p < 1.0).any()):
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(-1) - probs  # mass of strictly more likely tokens
        drop_sorted = mass_before >= top_p.to(probs.dtype)[:, None]
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Row b takes the first token whose cumulative probability exceeds u_b · (row total), u_b in
    [0, 1): token i with probability p_i; a zero-probability token is never taken."""
    probs = probs.to(torch.float64)
    cdf = probs.cumsum(-1)
    target = (uniforms.to(torch.float64) * cdf[:, -1]).unsqueeze(-1)
    token = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    # u rounded up to 1: the last token with positive probability, never a filtered one
    positions = torch.arange(probs.shape[-1], device=probs.device).expand_as(probs)
    last_positive = torch.where(probs > 0, positions, 0).amax(-1)
    return torch.minimum(token, last_positive)


def sample_next_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sampling step for a batch -> (token ids [B], log-probs [B]).

    Log-probs are those of the distribution actually sampled from (temperature-scaled, top-k/top-p
    filtered, renormalised: vLLM's `processed_logprobs`). Greedy rows (temperature < 1e-5) take the
    argmax and report its log-prob under the unscaled softmax. `uniforms` ([B] in [0, 1), one per
    row, e.g. from each request's own generator) make a row's draw independent of the other rows;
    without them one multinomial draw over the batch uses `generator`.
    """
    logits = logits.float()
    greedy = temperature < GREEDY_TEMPERATURE
    safe_t = torch.where(greedy, torch.ones_like(temperature), temperature).to(logits.dtype)
    processed = torch.log_softmax(filter_logits(logits / safe_t[:, None], top_k, top_p), dim=-1)
    if uniforms is None:
        sampled = torch.multinomial(processed.exp(), 1, generator=generator).squeeze(-1)
    else:
        sampled = inverse_cdf_sample(processed.exp(), uniforms)
    argmax = logits.argmax(-1)
    tokens = torch.where(greedy, argmax, sampled)
    raw_lp = torch.log_softmax(logits, dim=-1).gather(-1, argmax[:, None]).squeeze(-1)
    sampled_lp = processed.gather(-1, sampled[:, None]).squeeze(-1)
    return tokens, torch.where(greedy, raw_lp, sampled_lp)


# ----------------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------------


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    want_logprobs: bool = False
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    min_tokens: int = 0
    seed: int | None = None  # this response's own generator (request_seed); None: the batch's generator
    future: Any = None  # asyncio.Future, set by the server
    token_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    stop_reason: str = "completed"


def parse_sampling_params(
    sampling_params: dict[str, Any],
    prompt_len: int,
    *,
    prompt_length: int,
    response_length: int,
    max_model_len: int,
    default_ignore_eos: bool = False,
    default_repetition_penalty: float = 1.0,
) -> dict[str, Any]:
    """verl/vLLM-style sampling params -> `GenerationRequest` keyword arguments.

    `max_tokens` (or `max_new_tokens`) defaults to `min(response_length, prompt_length +
    response_length - prompt_len)` as in verl's vLLM server, then is clamped to
    `[1, max_model_len - prompt_len]`. Unknown keys raise unless they carry their neutral value.
    """
    for key, value in sampling_params.items():
        if key in _KNOWN_SAMPLING_PARAMS:
            continue
        if key in _NEUTRAL_SAMPLING_PARAMS:
            neutral = _NEUTRAL_SAMPLING_PARAMS[key]
            if neutral is None or value is None or value == neutral:
                continue
            raise ValueError(
                f"rollout.name=hf: sampling param {key}={value!r} is not supported (only {neutral!r})"
            )
        raise ValueError(
            f"rollout.name=hf: unknown sampling param {key!r}; supported: {sorted(_KNOWN_SAMPLING_PARAMS)}"
        )
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(
            f"rollout.name=hf: prompt of {prompt_len} tokens leaves no room within max_model_len={max_model_len}"
        )
    if sampling_params.get("max_tokens") is not None:
        max_tokens = int(sampling_params["max_tokens"])
    elif sampling_params.get("max_new_tokens") is not None:
        max_tokens = int(sampling_params["max_new_tokens"])
    else:
        max_tokens = min(response_length, prompt_length + response_length - prompt_len)
    max_tokens = max(1, min(max_tokens, room))

    temperature = float(sampling_params.get("temperature", 1.0))
    top_p = float(sampling_params.get("top_p", 1.0))
    top_k = sampling_params.get("top_k", -1)
    top_k = -1 if top_k is None else int(top_k)
    rep = sampling_params.get("repetition_penalty", default_repetition_penalty)
    rep = default_repetition_penalty if rep is None else float(rep)
    if temperature < 0:
        raise ValueError(f"rollout.name=hf: temperature={temperature} must be >= 0")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"rollout.name=hf: top_p={top_p} must be in (0, 1]")
    if rep <= 0:
        raise ValueError(f"rollout.name=hf: repetition_penalty={rep} must be > 0")
    ignore_eos = sampling_params.get("ignore_eos")
    logprobs = sampling_params.get("logprobs")
    # verl passes a bool; vLLM's integer form (0 = the sampled token only) also asks for them
    want_logprobs = logprobs is True or (type(logprobs) is int and logprobs >= 0)
    return dict(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=rep,
        want_logprobs=want_logprobs,
        ignore_eos=default_ignore_eos if ignore_eos is None else bool(ignore_eos),
        stop_token_ids=tuple(int(t) for t in (sampling_params.get("stop_token_ids") or ())),
        min_tokens=int(sampling_params.get("min_tokens") or 0),
    )


DETERMINISTIC_REQUEST_ID_PREFIX = "det-"


def priority_from_request_id(request_id: Any) -> int | None:
    """verl's row `priority` carried by a request id. verl forwards `priority` to vLLM servers only,
    but with `rollout.full_determinism=True` its agent loops name each request `det-<priority>`
    (single_turn_agent_loop / tool_agent_loop) and its server client passes that id through.
    None for any other id (a random uuid)."""
    if not isinstance(request_id, str) or not request_id.startswith(DETERMINISTIC_REQUEST_ID_PREFIX):
        return None
    digits = request_id[len(DETERMINISTIC_REQUEST_ID_PREFIX) :]
    try:
        return int(digits)
    except ValueError:
        return None


def request_seed(seed: int, step: int, priority: int, prompt_ids: Iterable[int], occurrence: int = 0) -> int:
    """The seed of one response's generator: a stable hash (blake2b, not Python's per-process
    salted `hash`) of the run's seed, the training step, verl's per-row `priority` (the row of the
    step's batch: prompt and sample index), the prompt tokens and `occurrence` (the k-th request with
    this same key in this step, so that callers that pass no distinct priority still get distinct
    samples of one prompt). 63 bits, for `torch.Generator.manual_seed`."""
    text = f"{int(seed)}|{int(step)}|{int(priority)}|{int(occurrence)}|" + ",".join(str(int(t)) for t in prompt_ids)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ----------------------------------------------------------------------------------------------
# Batched generation (model-level, no Ray): used by the server and testable on its own
# ----------------------------------------------------------------------------------------------


class BatchGenerator:
    """Left-padded batched sampling with a KV cache over a transformers causal LM."""

    def __init__(self, model, pad_id: int, eos_ids: Iterable[int], seed: int = 0):
        self.model = model
        self.pad_id = int(pad_id)
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.abort = threading.Event()  # set -> unfinished rows stop with stop_reason "aborted"

    @torch.no_grad()
    def run(self, requests: list[GenerationRequest]) -> None:
        """Fill `token_ids`, `log_probs`, `stop_reason` of every request in place."""
        from transformers import DynamicCache

        if not requests:
            return
        vocab = self.model.get_output_embeddings().weight.shape[0]
        ids, mask, pos = left_pad([r.prompt_ids for r in requests], self.pad_id)
        temperature = torch.tensor([r.temperature for r in requests])
        top_p = torch.tensor([r.top_p for r in requests])
        top_k = torch.tensor([r.top_k for r in requests], dtype=torch.long)
        penalty = torch.tensor([r.repetition_penalty for r in requests])
        use_penalty = bool((penalty != 1.0).any())
        seen = None
        if use_penalty:
            seen = torch.zeros((len(requests), vocab), dtype=torch.bool)
            for i, r in enumerate(requests):
                seen[i, torch.as_tensor(r.prompt_ids, dtype=torch.long).clamp(max=vocab - 1)] = True

        rows = list(range(len(requests)))  # request index of each live batch row
        # one generator per seeded request: its draws do not depend on the other rows of the batch
        generators = [None if r.seed is None else torch.Generator().manual_seed(int(r.seed)) for r in requests]
        per_request = any(g is not None for g in generators)
        cache = DynamicCache()
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos.to(self.device),
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float().cpu()
        next_pos = pos[:, -1] + 1
        while rows:
            if self.abort.is_set():
                for r in rows:
                    requests[r].stop_reason = "aborted"
                return
            step_logits = apply_repetition_penalty(logits, seen, penalty) if use_penalty else logits
            step_logits = self._suppress_early_stops(step_logits, [requests[r] for r in rows])
            uniforms = None
            if per_request:
                uniforms = torch.stack(
                    [torch.rand((), generator=generators[r] or self.generator, dtype=torch.float64) for r in rows]
                )
            tokens, lps = sample_next_tokens(step_logits, temperature, top_k, top_p, self.generator, uniforms)
            keep = []
            for b, r in enumerate(rows):
                req = requests[r]
                tok = int(tokens[b])
                req.token_ids.append(tok)
                if req.want_logprobs:
                    req.log_probs.append(float(lps[b]))
                stops = (not req.ignore_eos and tok in self.eos_ids) or tok in req.stop_token_ids
                if not stops and len(req.token_ids) < req.max_tokens:
                    keep.append(b)
            if not keep:
                return
            if use_penalty:
                seen[torch.arange(len(rows)), tokens] = True
            if len(keep) < len(rows):  # drop finished rows from every per-row tensor and the cache
                idx = torch.tensor(keep)
                cache.batch_select_indices(idx.to(self.device))
                tokens, mask, next_pos = tokens[idx], mask[idx], next_pos[idx]
                temperature, top_k, top_p, penalty = temperature[idx], top_k[idx], top_p[idx], penalty[idx]
                if use_penalty:
                    seen = seen[idx]
                rows = [rows[b] for b in keep]
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
            out = self.model(
                input_ids=tokens[:, None].to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=next_pos[:, None].to(self.device),
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1, :].float().cpu()
            next_pos = next_pos + 1

    def _suppress_early_stops(self, logits: torch.Tensor, reqs: list[GenerationRequest]) -> torch.Tensor:
        """`min_tokens`: stop tokens get -inf until a row has generated that many tokens."""
        if not any(r.min_tokens > len(r.token_ids) for r in reqs):
            return logits
        logits = logits.clone()
        for b, r in enumerate(reqs):
            if r.min_tokens > len(r.token_ids):
                stop = [t for t in (*self.eos_ids, *r.stop_token_ids) if t < logits.shape[-1]]
                logits[b, stop] = float("-inf")
        return logits


# ----------------------------------------------------------------------------------------------
# Ray pieces (verl imported lazily so the helpers above stay importable without it)
# ----------------------------------------------------------------------------------------------


def _hf_options(rollout_config) -> dict[str, Any]:
    kwargs = getattr(rollout_config, "engine_kwargs", None) or {}
    opts = kwargs.get("hf", None) or {}
    return dict(opts)


def _load_model_and_ids(model_config, opts: dict[str, Any]):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = getattr(model_config, "local_path", None) or model_config.path
    trust = bool(getattr(model_config, "trust_remote_code", False))
    override = dict(getattr(model_config, "override_config", None) or {})
    attn = opts.get("attn_implementation") or override.get("attn_implementation") or "sdpa"
    dtype = getattr(torch, str(opts.get("dtype", "float32")))
    device = torch.device(opts.get("device", "cpu"))
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attn, trust_remote_code=trust
    )
    model = model.to(device).eval()
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
    eos: set[int] = set()
    for source in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if source is None:
            continue
        eos.update([source] if isinstance(source, int) else source)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (min(eos) if eos else 0)
    return model, int(pad), sorted(eos)


def _ties_embeddings(model) -> bool:
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return bool(getattr(text_cfg, "tie_word_embeddings", False))


def _model_max_len(model) -> int:
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(getattr(text_cfg, "max_position_embeddings", 0) or 1 << 30)


class HFGenerationServer:
    """Token-in/token-out generation server (a Ray actor) -- see the module docstring."""

    def __init__(self, config, model_config, replica_rank: int = 0):
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.replica_rank = replica_rank
        self.opts = _hf_options(self.config)
        if self.opts.get("num_threads"):
            torch.set_num_threads(int(self.opts["num_threads"]))
        model, pad_id, eos_ids = _load_model_and_ids(self.model_config, self.opts)
        max_len = _model_max_len(model)
        self.max_model_len = int(self.config.max_model_len or max_len)
        self.batcher = BatchGenerator(model, pad_id, eos_ids, seed=int(self.config.seed) + replica_rank)
        # per-request seeds use the run's seed alone: the load balancer may send a request to any replica
        self.seed = int(self.config.seed)
        self._occurrences: dict[tuple, int] = {}  # (priority, prompt) -> requests seen this step
        self._occurrence_step: int | None = None
        self.max_batch_rows = self._max_batch_rows()
        self.batch_wait_s = float(self.opts.get("batch_wait_ms", 5)) / 1000.0
        self.global_steps = 0
        self.weight_version = 0
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._model_lock: asyncio.Lock | None = None
        self._gate: asyncio.Event | None = None  # cleared while generation is paused (abort)
        self._reject = False
        self._loaded: set[str] = set()  # tensor names received in the current weight sync

    def _max_batch_rows(self) -> int:
        per_row = self.config.prompt_length + self.config.response_length
        by_tokens = max(1, int(self.config.max_num_batched_tokens) // max(1, per_row))
        return max(1, min(int(self.config.max_num_seqs), by_tokens))

    def _ensure_loop_state(self):
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._model_lock = asyncio.Lock()
            self._gate = asyncio.Event()
            self._gate.set()
            self._worker = asyncio.get_running_loop().create_task(self._batch_loop())

    async def _batch_loop(self):
        while True:
            first = await self._queue.get()
            batch = [first]
            if self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)  # let concurrent requests arrive
            while len(batch) < self.max_batch_rows and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [r for r in batch if not r.future.done()]
            if not live:
                continue
            async with self._model_lock:
                try:
                    await asyncio.to_thread(self.batcher.run, live)
                except Exception as e:  # surface to every caller instead of hanging them
                    for r in live:
                        if not r.future.done():
                            r.future.set_exception(e)
                    continue
            for r in live:
                if not r.future.done():
                    r.future.set_result(self._token_output(r))

    def _token_output(self, req: GenerationRequest):
        from verl.workers.rollout.replica import TokenOutput

        return TokenOutput(
            token_ids=list(req.token_ids),
            log_probs=list(req.log_probs) if req.want_logprobs else None,
            stop_reason=req.stop_reason,
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps},
        )

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
        **kwargs,
    ):
        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError("rollout.name=hf generates text only (no image/video/audio inputs)")
        self._ensure_loop_state()
        prompt_ids = [int(t) for t in prompt_ids]
        params = parse_sampling_params(
            dict(sampling_params),
            len(prompt_ids),
            prompt_length=self.config.prompt_length,
            response_length=self.config.response_length,
            max_model_len=self.max_model_len,
            default_ignore_eos=bool(self.config.ignore_eos),
            default_repetition_penalty=float(self.config.repetition_penalty),
        )
        if not self._gate.is_set():
            if self._reject:
                return self._token_output(GenerationRequest(prompt_ids, 1, stop_reason="aborted"))
            await self._gate.wait()
        if not priority:  # verl passes `priority` to vLLM only; the det-<priority> request id carries it
            priority = priority_from_request_id(request_id) or 0
        req = GenerationRequest(prompt_ids=prompt_ids, seed=self._request_seed(prompt_ids, priority, sampling_params), **params)
        req.future = asyncio.get_running_loop().create_future()
        await self._queue.put(req)
        return await req.future

    def _request_seed(self, prompt_ids: list[int], priority, sampling_params: dict[str, Any]) -> int:
        """`request_seed` for this request at the current training step; a request's own `seed`
        sampling param (vLLM's per-request seed) replaces rollout.seed."""
        if self._occurrence_step != self.global_steps:
            self._occurrences.clear()
            self._occurrence_step = self.global_steps
        priority = int(priority or 0)
        key = (priority, tuple(prompt_ids))
        occurrence = self._occurrences.get(key, 0)
        self._occurrences[key] = occurrence + 1
        own = sampling_params.get("seed")
        base = self.seed if own is None else int(own)
        return request_seed(base, self.global_steps, priority, prompt_ids, occurrence)

    # ---- weights ----
    async def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]):
        """Copy one bucket of weights into the model (strict about names; applied at once, so the
        server never holds a second full copy). `finish_weight_update` checks that every tensor
        arrived. Generation is paused meanwhile (verl sleeps or aborts the replica first)."""
        self._ensure_loop_state()
        async with self._model_lock:
            model = self.batcher.model
            _, unexpected = model.load_state_dict(dict(named_tensors), strict=False)
            if unexpected:
                raise KeyError(f"rollout.name=hf: weight update has unknown tensors {unexpected[:5]}")
            self._loaded.update(name for name, _ in named_tensors)
        return len(named_tensors)

    async def finish_weight_update(self, global_steps: int | None = None):
        """End of one weight sync: every model tensor must have arrived since the last one."""
        self._ensure_loop_state()
        async with self._model_lock:
            loaded, self._loaded = self._loaded, set()
            model = self.batcher.model
            tied = set(getattr(model, "_tied_weights_keys", None) or []) if _ties_embeddings(model) else set()
            missing = sorted(set(model.state_dict()) - loaded - tied)
            if missing:
                raise KeyError(f"rollout.name=hf: weight update misses tensors {missing[:5]}")
            self.weight_version += 1
            if global_steps is not None:
                self.global_steps = int(global_steps)
        return {"n_tensors": len(loaded), "weight_version": self.weight_version}

    async def get_weights_checksum(self) -> float:
        """Sum of all parameters in float64 (tests compare it with the actor's)."""
        return float(sum(p.detach().double().sum() for p in self.batcher.model.parameters()))

    async def get_weight_version(self) -> int:
        return self.weight_version

    # ---- control plane called by RolloutReplica / CheckpointEngineManager ----
    async def wake_up(self, tags: list[str] | None = None):
        pass

    async def sleep(self):
        pass

    async def clear_kv_cache(self):
        pass

    async def release_kv_cache(self):
        pass

    async def resume_kv_cache(self):
        pass

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False):
        """Pause generation: queued requests return empty "aborted" outputs, the running batch stops
        at its next token and returns what it has (verl's partial-rollout client resumes them)."""
        self._ensure_loop_state()
        self._gate.clear()
        self._reject = bool(reject_request)
        aborted = 0
        while not self._queue.empty():
            req = self._queue.get_nowait()
            if not req.future.done():
                req.stop_reason = "aborted"
                req.future.set_result(self._token_output(req))
                aborted += 1
        self.batcher.abort.set()
        async with self._model_lock:  # wait for the running batch to stop
            pass
        return {"aborted_count": aborted, "request_ids": []}

    async def resume_generation(self):
        self._ensure_loop_state()
        self.batcher.abort.clear()
        self._reject = False
        self._gate.set()

    async def start_profile(self, **kwargs):
        pass

    async def stop_profile(self):
        pass

    async def set_global_steps(self, global_steps: int):
        self.global_steps = int(global_steps)


def _replica_class():
    from verl.workers.rollout.replica import RolloutReplica

    class HFReplica(RolloutReplica):
        """One `HFGenerationServer` per replica, on the node of the replica's first worker."""

        async def launch_servers(self):
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            if self.is_reward_model or self.is_teacher_model:
                raise NotImplementedError("rollout.name=hf serves the policy only (no reward/teacher model)")
            name = server_name(self.replica_rank, self.name_suffix)
            options: dict[str, Any] = dict(name=name, num_cpus=0, max_concurrency=self.max_concurrency)
            if self.workers:
                node_id = await self.workers[0].__ray_call__.remote(
                    lambda self: ray.get_runtime_context().get_node_id()
                )
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
            server = (
                ray.remote(HFGenerationServer)
                .options(**options)
                .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
            )
            await server.get_weight_version.remote()  # wait until the model is loaded
            self.servers = [server]
            self._server_handle = server
            self._server_address = f"hf://{name}"  # load-balancer key; there is no HTTP endpoint

        async def init_standalone(self):
            raise NotImplementedError(
                "rollout.name=hf runs colocated with the actor only (hybrid mode); use vLLM for standalone rollout"
            )

        async def init_colocated(self, resource_pool):
            raise NotImplementedError("rollout.name=hf runs in hybrid mode only; use vLLM for colocated rollout")

        def rollout_worker_use_gpu(self) -> bool:
            return False

    return HFReplica


def server_name(replica_rank: int, name_suffix: str = "") -> str:
    return f"{SERVER_NAME_PREFIX}{replica_rank}{name_suffix}"


_REPLICA_CLASS = None


def get_replica_class():
    global _REPLICA_CLASS
    if _REPLICA_CLASS is None:
        _REPLICA_CLASS = _replica_class()
    return _REPLICA_CLASS


def _adapter_class():
    from verl.workers.rollout.base import BaseRollout

    class HFServerAdapter(BaseRollout):
        """Lives in `ActorRolloutRefWorker`; pushes the FSDP weights to its replica's server."""

        def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, *args, **kwargs):
            super().__init__(config, model_config, device_mesh)
            rank = int(os.environ.get("RANK", "0"))
            world = (
                self.config.tensor_model_parallel_size
                * self.config.data_parallel_size
                * self.config.pipeline_model_parallel_size
            )
            self.replica_rank = rank // world if replica_rank == -1 else replica_rank
            self.rollout_rank = rank % world
            self.is_leader_rank = self.rollout_rank == 0
            self.bucket_bytes = int(self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20
            self._server = None

        def _server_handle(self):
            import ray

            if self._server is None:
                self._server = ray.get_actor(server_name(self.replica_rank))
            return self._server

        async def resume(self, tags: list[str]):
            pass

        async def release(self):
            pass

        async def update_weights(
            self,
            weights: Generator[tuple[str, torch.Tensor], None, None],
            wire_format: str = "named_tensors",
            global_steps: int | None = None,
            **kwargs,
        ):
            if wire_format != "named_tensors":
                raise NotImplementedError(f"rollout.name=hf: weight wire format {wire_format!r} is not supported")
            if kwargs.get("peft_config") is not None:
                raise NotImplementedError("rollout.name=hf: LoRA adapters are not supported; set model.lora.merge=True")
            # every rank drains the generator: DTensor.full_tensor() is a collective
            server = self._server_handle() if self.is_leader_rank else None
            bucket: list[tuple[str, torch.Tensor]] = []
            size = 0
            for name, tensor in weights:  # (the collective runs inside next(), on every rank)
                if server is None:
                    continue
                t = tensor.detach().to("cpu", copy=True).contiguous()  # detached: no autograd graph
                bucket.append((name, t))
                size += t.numel() * t.element_size()
                if size >= self.bucket_bytes:
                    await server.load_weights.remote(bucket)
                    bucket, size = [], 0
            if server is not None:
                if bucket:
                    await server.load_weights.remote(bucket)
                await server.finish_weight_update.remote(global_steps=global_steps)

    return HFServerAdapter


def __getattr__(name):  # module attributes built lazily (they subclass verl classes)
    if name == "HFServerAdapter":
        cls = _adapter_class()
        globals()["HFServerAdapter"] = cls
        return cls
    if name == "HFReplica":
        return get_replica_class()
    raise AttributeError(name)


def _register_adapter(rollout_base_module) -> None:
    rollout_base_module._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.HFServerAdapter"


def _register_replica(replica_module) -> None:
    replica_module.RolloutReplicaRegistry.register(ROLLOUT_NAME, get_replica_class)


def register() -> None:
    """Add `rollout.name=hf` to verl's rollout registries (idempotent, cheap).

    Safe inside `import verl` (the plugin entry point): the registrations run when verl's rollout
    modules are imported (now, if they already are), so this imports nothing heavy itself.
    """
    from siren_verl.verl_glue._import_hooks import after_import

    after_import("verl.workers.rollout.base", _register_adapter)
    after_import("verl.workers.rollout.replica", _register_replica)


def is_registered() -> bool:
    """Whether verl's rollout registries know `rollout.name=hf` (imports them)."""
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return (ROLLOUT_NAME, "async") in rollout_base._ROLLOUT_REGISTRY and ROLLOUT_NAME in RolloutReplicaRegistry._registry
