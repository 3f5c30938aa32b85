"""The sampler of `rollout.name=hf`: batched decoding with a KV cache over a transformers causal LM.

No verl here (torch and transformers only): verl's server contract, Ray and the weight sync live in
`siren_verl/verl_glue/` (`hf_rollout.py`, `siren_hf_replica.py`, `siren_hf_adapter.py`).

* tensor helpers: `left_pad`, `apply_repetition_penalty`, `filter_logits` (vLLM's top-k then top-p),
  `inverse_cdf_sample`, `sample_next_tokens` (log-probs of the distribution actually sampled from,
  vLLM's `processed_logprobs`);
* requests: `GenerationRequest`, `parse_sampling_params` (verl/vLLM sampling params, `max_tokens`
  as verl's vLLM server derives it), `priority_from_request_id` (verl's row priority carried by a
  `det-<priority>` request id) and `request_seed` (one response's own generator: the same settings
  and seed give the same responses however the requests are ordered or batched);
* `BatchGenerator`: left-padded batched sampling, per-row temperature / top-p / top-k / repetition
  penalty, EOS and stop-token stops, `min_tokens`, abort between tokens.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

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
# Tensor helpers (tested against brute force in tests/hf_rollout/test_sampling.py)
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


def request_seed(
    seed: int, step: int, priority: int, prompt_ids: Iterable[int], occurrence: int = 0, copy: int = 0
) -> int:
    """The seed of one response's generator: a stable hash (blake2b, not Python's per-process
    salted `hash`) of the run's seed, the training step, verl's per-row `priority` (the row of the
    step's batch: prompt and sample index), the prompt tokens and `occurrence` (the sample index when
    the caller knows it, else the k-th request with this same key in this step, so that callers that
    pass no distinct priority still get distinct samples of one prompt); `copy` > 0 separates requests
    that share all of these (the same prompt twice in one batch). 63 bits, for
    `torch.Generator.manual_seed`."""
    text = f"{int(seed)}|{int(step)}|{int(priority)}|{int(occurrence)}|" + ",".join(str(int(t)) for t in prompt_ids)
    if copy:
        text += f"|c{int(copy)}"
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
