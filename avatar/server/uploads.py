"""Reading a request body as form fields and files, within a byte budget, while it streams.

Starlette's ``request.form()`` reads the whole body before anyone can say it is too large; here the
budget is checked against Content-Length before reading and against the bytes counted as each chunk
arrives, so an oversized upload is refused after at most ``max_bytes`` have been read. A file part's
declared content type is checked as soon as its headers arrive, before its data is read.

Accepted bodies: ``multipart/form-data`` (files and fields), ``application/x-www-form-urlencoded`` and
a JSON object of strings (fields only).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from avatar.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from avatar.server.errors import MalformedRequestError

MAX_PARTS = 16

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

    def file(self, name: str) -> UploadedFile | None:
        return self.files.get(name)


async def read_form(request: Request[Any], *, max_bytes: int, files: Mapping[str, TypeCheck]) -> Form:
    """The request's form, reading at most ``max_bytes`` of body.

    ``files`` names the parts taken as files and the content types each accepts; a part with another
    name is a text field. Raises PayloadTooLargeError (413), UnsupportedMediaTypeError (415) and
    MalformedRequestError (400).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedRequestError("The Content-Length header is not a number.")
        if int(declared) > max_bytes:
            raise PayloadTooLargeError(_too_large(max_bytes))
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    media_type = kind.decode("latin-1").lower()
    body = _budgeted(request.stream(), max_bytes)
    if media_type == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise MalformedRequestError("The multipart/form-data body has no boundary parameter.")
        return await _MultipartReader(boundary, files).read(body)
    if media_type == "application/x-www-form-urlencoded":
        text = (await _collect(body)).decode("utf-8", errors="replace")
        return Form(fields=dict(parse_qsl(text, keep_blank_values=True)))
    if media_type == "application/json":
        return Form(fields=_json_fields(await _collect(body)))
    shown = media_type or "none"
    raise UnsupportedMediaTypeError(
        f"Request content type {shown!r} is not accepted; send multipart/form-data"
        + (f" with the file in a field named {', '.join(repr(n) for n in files)}." if files else ".")
    )


def _too_large(max_bytes: int) -> str:
    return f"The upload is larger than the limit of {max_bytes / 2**20:g} MB (AVATAR_MAX_UPLOAD_MB)."


async def _budgeted(stream: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    # Content-Length can be absent (chunked) or lie; the count of what really arrives is what matters.
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > max_bytes:
            raise PayloadTooLargeError(_too_large(max_bytes))
        yield chunk


async def _collect(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


def _json_fields(raw: bytes) -> dict[str, str]:
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequestError("The JSON body does not parse.") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InvalidRequestError("The JSON body must be an object whose values are strings.")
    return data


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


class _MultipartReader:
    """Feeds python-multipart's push parser chunk by chunk and keeps the parts it announces."""

    def __init__(self, boundary: bytes, files: Mapping[str, TypeCheck]) -> None:
        self.files = files
        self.form = Form()
        self.parts = 0
        self.ended = False
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    async def read(self, body: AsyncIterator[bytes]) -> Form:
        try:
            async for chunk in body:
                self._parser.write(chunk)
            self._parser.finalize()
        except FormParserError:
            raise MalformedRequestError("The multipart/form-data body is malformed.") from None
        if not self.ended:
            raise MalformedRequestError("The multipart/form-data body ends before its closing boundary.")
        return self.form

    def _on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise MalformedRequestError(f"The form has more than {MAX_PARTS} parts.")
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").lower()
        self._part.headers[name] = self._header_value.decode("utf-8", errors="replace")
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        part = self._part
        _, options = parse_options_header(part.headers.get("content-disposition", ""))
        if b"name" not in options:
            raise MalformedRequestError("A form part has no name in its Content-Disposition header.")
        part.name = options[b"name"].decode("utf-8", errors="replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", errors="replace")
        kind, _ = parse_options_header(part.headers.get("content-type", ""))
        part.content_type = kind.decode("latin-1").lower()
        check = self.files.get(part.name)
        part.is_file = check is not None
        if check is not None and not check(part.content_type):
            raise UnsupportedMediaTypeError(
                f"The {part.name!r} part is {part.content_type!r}, which is not a {part.name} type."
            )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._part.data += data[start:end]

    def _on_part_end(self) -> None:
        part = self._part
        if part.is_file:
            self.form.files[part.name] = UploadedFile(part.name, part.filename, part.content_type, bytes(part.data))
        else:
            self.form.fields[part.name] = part.data.decode("utf-8", errors="replace")

    def _on_end(self) -> None:
        self.ended = True
