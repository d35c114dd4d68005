#!/usr/bin/env python3
"""`make gpu-check`: the code paths only a GPU runs, on tiny random models, with one printed summary.

Made for a GPU machine lent for a few minutes: one NVIDIA GPU, Python with PyTorch and transformers
preinstalled, nothing downloadable, at most 64 MiB of files brought along, 10 minutes a command. So it
builds its models itself (the tiny ones the tests build, tests/production/conftest.py: a Qwen2, a
Whisper in CTranslate2 format, an XTTS), loads each through the production backend class, and reports
per check "ok", "failed: why" or "skipped: why" (a library that is not there, no CUDA device).

Checks: device selection (``auto`` picks CUDA, a CUDA setting without one is refused), the transformers
LLM in bf16 on CUDA with streaming and an early stop, CTranslate2 on CUDA and faster-whisper through
our recogniser, XTTS's CUDA path, the start-up GPU memory estimate, and the memory each one used.

``--dry-run`` checks the script itself on any machine: every check runs on the CPU instead, so its own
code is exercised wherever the libraries are installed (a test runs it so). ``--wheels DIR`` first
unpacks the wheels in DIR (e.g. ctranslate2 and faster-whisper, 44 MB for Python 3.12) into a private
folder on the import path: nothing is installed into the machine's Python.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "production")]


@dataclass
class Result:
    check: str
    status: str  # ok | failed | skipped
    detail: str
    seconds: float = 0.0
    peak_mib: float | None = None  # GPU memory at its highest during the check (torch's allocator)


class Skip(Exception):
    """A check that cannot run here, and why."""


def missing(*modules: str) -> list[str]:
    return [m for m in modules if not _importable(m)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-installed package
        return False


def need(*modules: str) -> None:
    absent = missing(*modules)
    if absent:
        raise Skip(f"{', '.join(absent)} not installed")


class Check:
    """Runs the checks on ``device`` ("cuda", or "cpu" in a dry run) and keeps their results."""

    def __init__(self, device: str, work: Path) -> None:
        self.device = device
        self.work = work
        self.results: list[Result] = []

    def run(self, name: str, fn: Callable[[], str]) -> None:
        started = time.perf_counter()
        torch = _torch()
        if torch is not None and self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            status, detail = "ok", fn()
        except Skip as why:
            status, detail = "skipped", str(why)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, and the next check runs
            status, detail = "failed", f"{type(exc).__name__}: {exc} ({_where(exc)})"
        peak = None
        if torch is not None and self.device == "cuda" and status != "skipped":
            peak = torch.cuda.max_memory_allocated() / 2**20
        self.results.append(Result(name, status, detail, time.perf_counter() - started, peak))
        print(f"{status:>8}  {name}: {detail}", flush=True)

    # --------------------------------------------------------------------------------- checks

    def environment(self) -> str:
        need("torch")
        import torch

        from avatar.backends.device import resolve_device
        from avatar.errors import ConfigError

        chosen = resolve_device("auto", "AVATAR_LLM_DEVICE")
        if not torch.cuda.is_available():
            with contextlib.suppress(ConfigError):
                resolve_device("cuda", "AVATAR_LLM_DEVICE")
                raise AssertionError("AVATAR_LLM_DEVICE=cuda was accepted without a CUDA device")
            return f"torch {torch.__version__}, no CUDA device: `auto` chose {chosen}, `cuda` refused"
        assert chosen == "cuda", f"`auto` chose {chosen} beside a CUDA device"
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        return (
            f"torch {torch.__version__} CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {props.name} "
            f"(compute {props.major}.{props.minor}), {free / 2**30:.1f} of {total / 2**30:.1f} GiB free; "
            "`auto` chose cuda"
        )

    def llm(self) -> str:
        need("torch", "transformers", "tokenizers")
        from conftest import build_tiny_qwen

        from avatar.backends.transformers_llm import LLMOptions, TransformersChat
        from avatar.types import ChatMessage

        folder = build_tiny_qwen(self.work / "tiny-qwen")
        dtype = "bfloat16" if self.device == "cuda" else "auto"
        chat = TransformersChat(folder, LLMOptions(device=self.device, dtype=dtype, temperature=0.0))
        try:
            chat.warmup()
            messages = [ChatMessage("system", "You are Eileen."), ChatMessage("user", "Tell me a long story.")]
            started = time.perf_counter()
            stream = chat.stream(messages, max_new_tokens=40)
            assert isinstance(stream, Generator)  # what a stream is: closing it stops the model
            pieces = [next(stream) for _ in range(3)]
            first = time.perf_counter() - started
            stream.close()  # the stop: generation ends before the next token
            stopped = chat.tokens_generated
            time.sleep(0.3)
            assert chat.tokens_generated == stopped, "tokens were generated after the stream was closed"
            whole = chat.reply(messages, max_new_tokens=16)
            assert pieces and whole, "the model wrote nothing"
            return (
                f"{chat.device} {chat.dtype}: 3 streamed pieces in {first:.3f} s, stopped after {stopped} tokens "
                f"in all, a whole reply of {chat.last_generated_tokens} tokens"
            )
        finally:
            chat.close()

    def ctranslate2(self) -> str:
        need("ctranslate2")
        import ctranslate2

        if self.device == "cpu":
            cpu_types = sorted(ctranslate2.get_supported_compute_types("cpu"))
            return f"ctranslate2 {ctranslate2.__version__}: CPU compute types {cpu_types}"
        count = ctranslate2.get_cuda_device_count()
        assert count > 0, "ctranslate2 sees no CUDA device (its wheel could not load the CUDA libraries?)"
        types = sorted(ctranslate2.get_supported_compute_types("cuda"))
        assert "float16" in types, f"no float16 on CUDA: {types}"
        return f"ctranslate2 {ctranslate2.__version__}: {count} CUDA device(s), compute types {types}"

    def whisper(self) -> str:
        need("torch", "transformers", "ctranslate2", "av", "faster_whisper")
        import numpy as np
        from conftest import build_tiny_whisper

        from avatar.backends.whisper import WhisperOptions, WhisperRecognizer

        folder = build_tiny_whisper(self.work / "tiny-whisper", self.work / "whisper-build")
        recogniser = WhisperRecognizer(folder, WhisperOptions(device=self.device, vad=False))
        try:
            recogniser.warmup()
            tone = (0.2 * np.sin(np.linspace(0, 2 * np.pi * 440 * 2, 32_000))).astype(np.float32)
            started = time.perf_counter()
            transcript = recogniser.transcribe(tone, language="en")
            took = time.perf_counter() - started
            return (
                f"{recogniser.device} {recogniser.compute_type}: 2 s transcribed in {took:.3f} s "
                f"({len(transcript.text)} characters: a random model's)"
            )
        finally:
            recogniser.close()

    def xtts(self) -> str:
        need("torch", "TTS", "torchaudio")
        from conftest import VOICE_SAMPLE, build_tiny_xtts

        from avatar.backends.xtts import XttsOptions, XttsSynthesizer
        from avatar.types import VoiceSpec

        folder = build_tiny_xtts(self.work / "tiny-xtts")
        tts = XttsSynthesizer(folder, options=XttsOptions(device=self.device, stream_chunk_size=3))
        try:
            voice = VoiceSpec(key="eileen", language="en", sample=str(VOICE_SAMPLE))
            started = time.perf_counter()
            chunks = list(tts.stream("Hello there, how are you today?", voice))
            took = time.perf_counter() - started
            samples = sum(len(c) for c in chunks)
            assert samples > 0, "no audio"
            audio = samples / tts.sample_rate
            return f"{tts.device}: {len(chunks)} streamed chunk(s), {audio:.2f} s of audio in {took:.3f} s"
        finally:
            tts.close()

    def memory_estimate(self) -> str:
        from avatar.config import load_settings
        from avatar.gpu import estimate_gpu_needs

        settings = load_settings({}, asr_device=self.device, llm_device=self.device)
        needs = estimate_gpu_needs(settings, cuda_available=self.device == "cuda")
        listed = ", ".join(f"{n.kind} {n.name} {n.bytes / 2**30:.1f} GiB ({n.basis})" for n in needs) or "none"
        return f"the start-up estimate for the default settings on {self.device}: {listed}"


def _torch() -> Any:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def _where(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


@contextlib.contextmanager
def carried_wheels(folder: Path | None) -> Iterator[None]:
    """Each wheel in ``folder`` unpacked into a private folder put first on the import path (a wheel is a
    zip of its installed files)."""
    if folder is None:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="gpu-check-site-") as site:
        for wheel in sorted(folder.glob("*.whl")):
            with zipfile.ZipFile(wheel) as zipped:
                zipped.extractall(site)
        sys.path.insert(0, site)
        importlib.invalidate_caches()
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="run every check on the CPU: checks the script")
    parser.add_argument("--wheels", type=Path, default=None, help="a folder of wheels to unpack first")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--only", action="append", default=None, help="run only this check (repeatable)")
    args = parser.parse_args(argv)
    with carried_wheels(args.wheels), tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        torch = _torch()
        cuda = torch is not None and torch.cuda.is_available()
        device = "cpu" if args.dry_run or not cuda else "cuda"
        print(f"gpu-check on {device}{' (dry run)' if args.dry_run else ''}, Python {sys.version.split()[0]}")
        check = Check(device, Path(work))
        checks: dict[str, Callable[[], str]] = {
            "device selection": check.environment,
            "transformers LLM, bf16, streaming and stop": check.llm,
            "CTranslate2 on the device": check.ctranslate2,
            "faster-whisper recogniser": check.whisper,
            "XTTS": check.xtts,
            "GPU memory estimate": check.memory_estimate,
        }
        for name, fn in checks.items():
            if args.only and name not in args.only:
                continue
            if device == "cpu" and not args.dry_run:
                check.results.append(Result(name, "skipped", "no CUDA device (use --dry-run to check the script)"))
                print(f" skipped  {name}: no CUDA device", flush=True)
                continue
            check.run(name, fn)
    print("\nsummary")
    for r in check.results:
        memory = f", peak {r.peak_mib:.0f} MiB" if r.peak_mib is not None else ""
        print(f"  {r.status:>8}  {r.check} ({r.seconds:.1f} s{memory})")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "results": [asdict(r) for r in check.results]}, indent=1))
    return 1 if any(r.status == "failed" for r in check.results) else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
