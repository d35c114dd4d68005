"""Reading a request body as form fields and files, within a byte budget, while it streams.

Multipart bodies go through Starlette's own parser (with caps on files and fields; a part named only by
RFC 5987 ``filename*=`` is a file too); the request's ``receive`` is wrapped so that the bytes that really arrive are
counted, and an oversized upload is refused (413) after at most ``max_bytes`` have been read, whatever
Content-Length says. Names and filenames in any script are fine (the parser keeps header bytes and
decodes them as UTF-8).

Accepted bodies: ``multipart/form-data`` (files and fields), ``application/x-www-form-urlencoded`` and
a JSON object of strings (fields only). A field sent twice is refused (422) rather than one copy being
picked silently; so is a field holding NUL, control characters or lone surrogates.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import Message, Receive

from avatar.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from avatar.pipeline.text import invalid_characters
from avatar.server.error_responses import MalformedRequestError

MAX_PARTS = 16  # files and fields together; every route takes a handful

TypeCheck = Callable[[str], bool]
"""Whether a file part's declared content type (lower case, no parameters; "" when absent) is allowed."""


def audio_type(content_type: str) -> bool:
    """Audio, or a container browsers record audio into; undeclared and generic binary are let through
    for the decoder to judge."""
    major = content_type.split("/", 1)[0]
    return major in ("audio", "video") or content_type in ("", "application/octet-stream", "application/ogg")


def image_type(content_type: str) -> bool:
    return content_type.startswith("image/") or content_type in ("", "application/octet-stream")


@dataclass(frozen=True)
class UploadedFile:
    name: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass
class Form:
    """The fields and files of one request body."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        """A text field, or None when absent or blank."""
        value = self.fields.get(name)
        return value if value is not None and value.strip() else None

    def choice(self, name: str) -> str | None:
        """An optional field that names something (``persona``): None when absent. Sent but blank, it is
        refused (422) rather than taken as "the default", which the schema's pattern does not allow."""
        value = self.fields.get(name)
        if value is not None and not value.strip():
            raise InvalidRequestError(f"The {name!r} field is empty; name one, or leave the field out for the default.")
        return value

    def file(self, name: str) -> UploadedFile | None:
        return self.files.get(name)


async def read_form(
    request: Request[Any], *, max_bytes: int, files: Mapping[str, TypeCheck], either: frozenset[str] = frozenset()
) -> Form:
    """The request's form, reading at most ``max_bytes`` of body.

    ``files`` names the parts taken as files and the content types each accepts; a part with another
    name is a text field. A part named in ``either`` may be a file or a text field (``voice`` on
    ``POST /personas``: a sample to clone, or the name of a voice). Raises PayloadTooLargeError (413),
    UnsupportedMediaTypeError (415), MalformedRequestError (400) and InvalidRequestError (422: a field
    twice, or with characters no text may hold).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedRequestError("The Content-Length header is not a number.")
        if int(declared) > max_bytes:
            raise PayloadTooLargeError(_too_large(max_bytes))
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    media_type = kind.decode("latin-1").lower()
    budgeted = _Budgeted(request.receive, max_bytes)
    guarded = Request(request.scope, budgeted)
    if media_type == "multipart/form-data":
        form = await _multipart(guarded, files, max_bytes, either)
        # Starlette's parser takes a body cut off before its closing boundary as complete, losing the
        # unfinished part (an interrupted upload would then read as "no audio sent").
        if b"--" + options.get(b"boundary", b"") + b"--" not in budgeted.tail:
            raise MalformedRequestError("The multipart/form-data body ends before its closing boundary.")
    elif media_type == "application/x-www-form-urlencoded":
        form = Form(fields=_unique(_urlencoded(await guarded.body())))
    elif media_type == "application/json":
        form = Form(fields=_json_fields(await guarded.body()))
    else:
        shown = media_type or "none"
        raise UnsupportedMediaTypeError(
            f"Request content type {shown!r} is not accepted; send multipart/form-data"
            + (f" with the file in a field named {', '.join(repr(n) for n in files)}." if files else ".")
        )
    for name, value in form.fields.items():
        _check_characters(name, value)
    return form


def _too_large(max_bytes: int) -> str:
    return f"The upload is larger than the limit of {max_bytes / 2**20:g} MB (AVATAR_MAX_UPLOAD_MB)."


class _Budgeted:
    """``receive``, counting body bytes: PayloadTooLargeError as soon as more than ``max_bytes`` arrived.
    Content-Length can be absent (chunked) or lie; the count of what really arrives is what matters.
    It keeps the body's last bytes too, to tell a complete multipart body from a cut-off one."""

    TAIL = 256

    def __init__(self, receive: Receive, max_bytes: int) -> None:
        self.receive = receive
        self.max_bytes = max_bytes
        self.seen = 0
        self.tail = b""

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            self.seen += len(body)
            if self.seen > self.max_bytes:
                raise PayloadTooLargeError(_too_large(self.max_bytes))
            self.tail = (self.tail + body)[-self.TAIL :]
        return message


async def _multipart(
    request: Request[Any], files: Mapping[str, TypeCheck], max_bytes: int, either: frozenset[str]
) -> Form:
    # A text part may be as long as the whole body: its length is judged by its field's own limit
    # (422 naming both), not by a parser's cap on parts (which would say neither).
    parser = _Rfc5987Parser(
        request.headers, request.stream(), max_files=MAX_PARTS, max_fields=MAX_PARTS, max_part_size=max_bytes
    )
    try:
        data = await parser.parse()
    except MultiPartException as exc:  # a malformed body, or one past the caps on parts
        raise MalformedRequestError(f"The multipart/form-data body is malformed: {exc.message}") from None
    try:
        return await _collect(data, files, either)
    finally:
        await data.close()


class _Rfc5987Parser(MultiPartParser):
    """Starlette's multipart parser, taking a part named only by ``filename*=`` (RFC 5987/2231, the form
    for names outside ASCII) as the file it is; python-multipart reads a plain ``filename`` only."""

    def on_header_end(self) -> None:
        if self._current_partial_header_name.lower() == b"content-disposition":
            self._current_partial_header_value = _plain_filename(self._current_partial_header_value)
        super().on_header_end()


def _plain_filename(disposition: bytes) -> bytes:
    """``disposition`` with a ``filename`` parameter added from its ``filename*`` when it has only that."""
    _, options = parse_options_header(disposition)
    if b"filename" in options or b"filename*" not in disposition.lower():
        return disposition
    header = email.message.Message()
    header["content-disposition"] = disposition.decode("utf-8", "replace")
    filename = header.get_filename()
    if filename is None:
        return disposition
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    return disposition + b'; filename="' + quoted.encode("utf-8") + b'"'


async def _collect(data: FormData, files: Mapping[str, TypeCheck], either: frozenset[str]) -> Form:
    form = Form()
    names = [name for name, _ in data.multi_items()]
    _refuse_duplicates(names)
    for name, value in data.multi_items():
        check = files.get(name)
        if isinstance(value, str):
            if check is not None and name not in either:
                raise InvalidRequestError(
                    f"The {name!r} part is not a file; send it as a file part (with a filename), "
                    f"e.g. curl -F {name}=@file."
                )
            form.fields[name] = value
            continue
        if check is None:  # a file where a text field is expected (curl -F text=@note.txt): its text
            form.fields[name] = _utf8(name, await value.read())
            continue
        content_type = _declared_type(value)
        if not check(content_type):
            raise UnsupportedMediaTypeError(f"The {name!r} part is {content_type!r}, which is not a {name} type.")
        form.files[name] = UploadedFile(name, value.filename, content_type, await value.read())
    return form


def _declared_type(upload: UploadFile) -> str:
    kind, _ = parse_options_header(upload.headers.get("content-type", ""))
    return kind.decode("latin-1").lower()


def _utf8(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequestError(f"The {name!r} field is not UTF-8 text.") from None


def _urlencoded(raw: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            _utf8("form", raw), keep_blank_values=True, max_num_fields=MAX_PARTS, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise MalformedRequestError("The form body holds percent-escapes that are not UTF-8.") from None
    except ValueError:
        raise MalformedRequestError(f"The form has more than {MAX_PARTS} fields.") from None


def _json_fields(raw: bytes) -> dict[str, str]:
    try:
        data = json.loads(raw or b"null", object_pairs_hook=_unique)
    except RecursionError:  # the parser recurses once per level of nesting
        raise MalformedRequestError("The JSON body is nested too deeply; send one flat object of strings.") from None
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequestError("The JSON body does not parse.") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InvalidRequestError("The JSON body must be an object whose values are strings.")
    return data


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    _refuse_duplicates([name for name, _ in pairs])
    return dict(pairs)


def _refuse_duplicates(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidRequestError(f"The {name!r} field is sent more than once; send it once.")
        seen.add(name)


def _check_characters(name: str, value: str) -> None:
    for what, text in (("name of a field", name), (f"{name!r} field", value)):
        problem = invalid_characters(text)
        if problem is not None:
            raise InvalidRequestError(f"The {what} {problem}.")
