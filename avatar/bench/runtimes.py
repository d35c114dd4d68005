"""`avatar bench --runtimes`: the two llama.cpp runtimes side by side, on the same model and prompts.

A is llama-cpp-python built from source by ``make install-llama-source``; B is xllamacpp's prebuilt wheel.
Both are loaded once and driven through the backend interface the pipeline uses, with the default
persona's real prompt (instructions and knowledge) and the benchmark's questions. Turns alternate
A, B, A, B, so a machine shared with other work slows both alike rather than one of them.

Per turn: the first spoken piece (the call to the first clause the sentence splitter hands on, as
the Respond stage would), decode speed (tokens after the first, per second) and the prompt tokens
already cached. Each question is measured ``reps`` times, after one earlier turn of history.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from avatar.backends.llamacpp_llm import LlamaCppOptions
from avatar.bench.fixtures import TURNS
from avatar.bench.stats import spread
from avatar.config import Settings
from avatar.types import ChatMessage

RUNTIMES = ("llama-cpp-python", "xllamacpp")


def _load(runtime: str, settings: Settings, options: LlamaCppOptions) -> Any:
    path = settings.model_path(settings.llm_model)
    if runtime == "xllamacpp":
        from avatar.backends.xllamacpp_llm import XLlamaCppChat

        return XLlamaCppChat(path, options)
    from avatar.backends.llamacpp_llm import LlamaCppChat

    return LlamaCppChat(path, options)


def _turn(llm: Any, messages: list[ChatMessage], max_new_tokens: int) -> dict[str, float]:
    from avatar.pipeline.pieces import PieceSplitter

    splitter = PieceSplitter(2, messages)
    started = time.perf_counter()
    first_piece = first_token = None
    tokens = 0
    stream = llm.stream(messages, max_new_tokens=max_new_tokens)
    try:
        for text in stream:
            now = time.perf_counter()
            tokens += 1
            first_token = first_token or now
            if splitter.feed(text) and first_piece is None:
                first_piece = now
                llm.share_cores()  # as the Respond stage does once the voice and the face start
            if splitter.complete:
                break
    finally:
        stream.close()
    ended = time.perf_counter()
    decode = (tokens - 1) / (ended - first_token) if first_token and tokens > 1 and ended > first_token else 0.0
    return {
        "first_piece_s": (first_piece or ended) - started,
        "first_token_s": (first_token or ended) - started,
        "decode_tok_s": decode,
        "prompt_tokens": float(llm.last_prompt_tokens),
        "reused_tokens": float(llm.last_reused_tokens),
    }


def run_runtimes(
    settings: Settings,
    *,
    reps: int = 5,
    threads: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (1, 2)),
    log: Callable[[str], None] = print,
    on_rows: Callable[[dict[str, Any]], None] = lambda result: None,
) -> dict[str, Any]:
    """Measure both runtimes for each (threads, alone_threads) pair; the summary per runtime and pair.
    ``on_rows`` gets the result so far after each pair (a run cut short keeps what it measured)."""
    from avatar.personas import load_persona
    from avatar.prompt import build_messages, static_system

    persona = load_persona(settings.assets_dir / "personas" / settings.default_persona)
    base = LlamaCppOptions(
        context_tokens=settings.llm_context_tokens,
        temperature=settings.llm_temperature,
        seed=7,
        warm_system_prompt=static_system(persona),
    )
    rows: list[dict[str, Any]] = []
    for generating, alone in threads:
        options = replace(base, threads=generating, alone_threads=alone)
        models = {name: _load(name, settings, options) for name in RUNTIMES}
        try:
            for model in models.values():
                model.warmup()
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in RUNTIMES}
            history = [ChatMessage("user", "Hello!"), ChatMessage("assistant", "Hello! I'm glad you came by.")]
            # Each turn asks the next question: the persona's prompt and the history are cached, the rest
            # (what bears on this question, and the question) is read, as in a conversation.
            for rep in range(reps * len(TURNS) + 1):
                turn = TURNS[rep % len(TURNS)]
                messages = build_messages(persona, history, turn.question)
                for name in RUNTIMES if rep % 2 == 0 else RUNTIMES[::-1]:
                    result = _turn(models[name], messages, settings.llm_max_new_tokens)
                    if rep > 0:  # the first fills the cache with the persona's prompt and the history
                        samples[name].append(result)
                        log(f"{name} threads={generating}/{alone} {turn.name}: {result['first_piece_s']:.3f} s")
        finally:
            for model in models.values():
                model.close()
        for name in RUNTIMES:
            rows.append({"runtime": name, "threads": generating, "alone_threads": alone, **_summary(samples[name])})
        on_rows({"reps": reps, "questions": [t.name for t in TURNS], "rows": rows})
    return {"reps": reps, "questions": [t.name for t in TURNS], "rows": rows}


def _summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(samples)}
    for key in ("first_piece_s", "first_token_s", "decode_tok_s", "prompt_tokens", "reused_tokens"):
        s = spread([row[key] for row in samples])
        out[key] = None if s is None else s.as_dict()
    return out


def markdown(result: dict[str, Any]) -> str:
    """The A/B table for the report."""
    lines = [
        "| runtime | threads (writing / reading) | first spoken piece p50 (p95) | first token p50 | decode tok/s p50 "
        "| prompt tokens cached p50 |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        piece, token, decode, reused, prompt = (
            row[k] for k in ("first_piece_s", "first_token_s", "decode_tok_s", "reused_tokens", "prompt_tokens")
        )
        lines.append(
            f"| {row['runtime']} | {row['threads']} / {row['alone_threads']} "
            f"| {piece['p50']:.3f} s ({piece['p95']:.3f}) | {token['p50']:.3f} s | {decode['p50']:.1f} "
            f"| {reused['p50']:.0f} of {prompt['p50']:.0f} |"
        )
    return "\n".join(lines)
