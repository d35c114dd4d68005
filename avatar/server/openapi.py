"""The OpenAPI 3.1 description of the service, written by hand.

It describes this deployment: length limits come from the settings, and the bearer-key requirement is
there only when API keys are configured. Tests validate real responses of every route against it and
run schemathesis from it, so what it promises is what the server does.
"""

from __future__ import annotations

import copy
from typing import Any

from avatar import __version__ as VERSION
from avatar.config import Settings
from avatar.knowledge import MAX_KNOWLEDGE_CHARS
from avatar.personas import NAME_PATTERN
from avatar.server.live.offers import MAX_CANDIDATES

JSON = "application/json"
FORM = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"

ERROR_RESPONSES = {
    400: (
        "BadRequest",
        "invalid_audio, invalid_image or malformed_request: the upload (or a header) cannot be read, or the audio "
        "is longer than AVATAR_MAX_AUDIO_SECONDS.",
    ),
    401: ("Unauthorized", "unauthorized: API keys are configured and the request has no valid Authorization: Bearer."),
    403: ("ForbiddenOrigin", "forbidden_origin: a browser page on another site (not in AVATAR_CORS_ORIGINS) sent it."),
    404: ("NotFound", "unknown_persona, or not_found: no such result (unknown, malformed or expired id)."),
    408: ("RequestTimeout", "request_timeout: the body arrived too slowly; the connection is closed."),
    413: ("PayloadTooLarge", "payload_too_large: the body exceeds AVATAR_MAX_UPLOAD_MB (checked while it streams)."),
    415: (
        "UnsupportedMediaType",
        "unsupported_media_type: the request or a file part has a content type this endpoint does not take.",
    ),
    416: (
        "RangeNotSatisfiable",
        "range_not_satisfiable: the Range lies outside the file (Content-Range gives its size).",
    ),
    422: (
        "Unprocessable",
        "invalid_request (a field missing, sent twice, too long, not text, or nothing a voice can say), "
        "no_speech (nothing said in the audio) or no_face (no face in the photo).",
    ),
    409: (
        "Cancelled",
        "cancelled: the turn was stopped (DELETE, or a newer turn of the same session) before it ended.",
    ),
    500: ("InternalError", "internal_error: a bug; the body carries the request id."),
    503: (
        "NotReady",
        "not_ready: the models are loading (Retry-After says when to ask again) or failed; see GET /readyz. "
        "busy: the model queue is full (AVATAR_MAX_QUEUED_REQUESTS) or too many connections are open; retry "
        "after Retry-After seconds. shutting_down: the request was cut off by a shutdown; send it again. "
        "storage_full: the output folder's disk is full or read-only (nothing was kept; the oldest results "
        "are removed; retry after Retry-After). session_store_unavailable: Redis does not answer (checked "
        "before the turn's work).",
    ),
    504: (
        "Timeout",
        "model_timeout: a model call ran past AVATAR_STAGE_TIMEOUT_SECONDS (the model is reported on /readyz "
        "until it recovers); turn_timeout: the turn ran past AVATAR_TURN_TIMEOUT_SECONDS.",
    ),
}
_WITH_RETRY_AFTER = frozenset({503})


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: str) -> dict[str, Any]:
    return {"content": {JSON: {"schema": _ref("schemas", schema)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ref("responses", ERROR_RESPONSES[status][0]) for status in sorted({*statuses, 500})}


# Every upload route: bad body (400), slow body (408), too large (413), wrong type (415), bad field (422),
# not ready or busy (503); and, from a browser on another site, 403.
_UPLOAD_ERRORS = (400, 403, 408, 413, 415, 422, 503)

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before asking again (loading, busy, shutting_down).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _form(
    properties: dict[str, Any], required: list[str] | None = None, *, fields_only: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A request body: multipart with every property; where ``fields_only`` names the text fields a
    request may carry alone, the urlencoded and JSON encodings too (files need multipart)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    content: dict[str, Any] = {FORM: {"schema": schema}}
    if fields_only:
        text_schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: properties[name] for name in fields_only},
            "additionalProperties": {"type": "string"},
        }
        if required:
            text_schema["required"] = [name for name in required if name in fields_only]
        content[URLENCODED] = {"schema": text_schema}
        content[JSON] = {"schema": text_schema}
    return {"required": True, "content": content}


_AUDIO_FILE = {
    "type": "string",
    "format": "binary",
    "contentMediaType": "application/octet-stream",
    "description": "Recorded speech in any format FFmpeg decodes (WAV, MP3, OGG/Opus, FLAC, M4A, WebM), sent "
    "as a file part (with a filename). Its content type must be audio/*, video/*, application/ogg, "
    "application/octet-stream or absent.",
}
_IMAGE_FILE = {
    "type": "string",
    "format": "binary",
    "contentMediaType": "image/*",
    "description": "A photo with one face (JPEG, PNG or WebP, judged by content), instead of a persona; at most "
    "AVATAR_MAX_IMAGE_PIXELS pixels.",
}
_PERSONA = {
    "type": "string",
    "pattern": NAME_PATTERN.pattern,
    "maxLength": 64,
    "description": "A persona name from GET /api/v1/personas; default: the configured one.",
}
_VOICE = {
    "type": "string",
    "maxLength": 64,
    "description": "A voice name from GET /api/v1/voices, instead of the persona's own voice; an unknown name is "
    "422 naming the voices there are. A voice that speaks another language than the persona's is used all the "
    "same, and the answer says so (voice_note; on /speak, the X-Voice-Note header).",
}
_SESSION = {
    "type": "string",
    "description": "The session_id of an earlier reply, to continue that conversation. An unknown or expired id "
    "(or one of another persona) starts a new session.",
}
_LANGUAGE = {"type": "string", "description": "e.g. en; default: detect (or the model's language)."}
_VIDEO_FORMAT = {
    "type": "string",
    "enum": ["h264", "vp9"],
    "description": "The reply video's codecs: h264 (H.264 + AAC, the default; plays everywhere H.264 does) or "
    "vp9 (VP9 + Opus; Chromium and Firefox as they come). Both in MP4.",
}
_PERSONA_PATH = {
    "name": "persona",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NAME_PATTERN.pattern, "maxLength": 64},
}
_TURN_EVENTS = (
    "Server-Sent Events, in this order: `queued` {id, session_id, persona, position} (the turn's id — needed "
    "to stop it — and how many requests are ahead); `started`; `transcript` {text, language} (spoken "
    "questions); `reply` {delta, text} as the model writes (text is the reply so far); `segment` {index, url, "
    "name, start, duration, bytes, mime, final} for each piece of the video as soon as it is encoded — "
    "appended in index order to one Media Source Extensions SourceBuffer (segment 0 carries the "
    "initialisation), they play gap-free; then `done` (the same summary as POST /api/v1/conversation, with "
    "the URL of the complete, seekable MP4) or `error` {code, message} (the codes of the JSON errors). "
    "Comments (`: ping`) keep the connection alive."
)

_PICTURE_TOKEN = {
    "name": "token",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "description": "For a persona created with an API key: the token in the image_url/face_url of its owner's "
    "listing (an <img> sends no key); without it (or the owner's key), 404.",
}
_RESULT_ID = {
    "name": "result_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
_RANGE_HEADER = {
    "name": "Range",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "example": "bytes=0-1023"},
    "description": "Ask for part of the file (RFC 9110); answered with 206 Partial Content.",
}


def _text(settings: Settings) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.max_text_chars,
        "description": f"What the user says, typed: at most {settings.max_text_chars} characters "
        "(AVATAR_MAX_TEXT_CHARS), with letters or digits in it.",
    }


def _file_download(media_type: str, what: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": f"The reply's {what}",
            "description": "Open to anyone holding the URL even when API keys are configured: the result id is "
            "128 random bits, handed only to the caller.",
            "parameters": [_RESULT_ID, _RANGE_HEADER],
            "security": [],
            "responses": {
                "200": {"description": f"The whole {what}.", "content": {media_type: {}}},
                "206": {
                    "description": "The requested byte range (Content-Range says which).",
                    "content": {media_type: {}, "multipart/byteranges": {}},
                },
                **_errors(400, 404, 416),
            },
        }
    }


def _paths(settings: Settings) -> dict[str, Any]:
    text = _text(settings)
    turn = _form(  # a whole turn's fields: /conversation and /conversation/stream
        {
            "audio": _AUDIO_FILE,
            "text": text,
            "persona": _PERSONA,
            "voice": _VOICE,
            "session_id": _SESSION,
            "video_format": _VIDEO_FORMAT,
        },
        fields_only=("text", "persona", "voice", "session_id", "video_format"),
    )
    return {
        "/": {
            "get": {
                "summary": "The web page: talk to a persona in the browser",
                "security": [],
                "responses": {"200": {"description": "HTML.", "content": {"text/html": {}}}, **_errors()},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the process and its event loop answer",
                "security": [],
                "responses": {"200": {"description": "Alive.", **_json("Health")}, **_errors()},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: this replica can take another request now",
                "security": [],
                "responses": {
                    "200": {"description": "Every model loaded and warm, and room in the queue.", **_json("Readiness")},
                    "503": {
                        "description": "loading, failed (a model failed to load), unhealthy (a model keeps failing), "
                        "busy (the model queue is full), storage_full (the output folder's disk has less free space "
                        "than AVATAR_MIN_FREE_DISK_MB, or is read-only) or session_store_unavailable (Redis does not "
                        "answer); the reason says which. Retry-After while loading, busy, storage_full or "
                        "session_store_unavailable.",
                        "headers": _RETRY_AFTER,
                        **_json("Readiness"),
                    },
                    **_errors(),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Requests by route and status, stage and first-frame latency, queue, "
                        "models, tokens, process and GPU memory.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1 document.", "content": {JSON: {}}}, **_errors()},
            }
        },
        "/api/v1/conversation": {
            "post": {
                "summary": "One whole turn: question (audio or text) → the persona's video reply",
                "requestBody": turn,
                "responses": {
                    "200": {
                        "description": "The turn's summary and the URLs of its MP4 and WAV.",
                        **_json("TurnSummary"),
                    },
                    **_errors(*_UPLOAD_ERRORS, 401, 404, 409, 504),
                },
            }
        },
        "/api/v1/conversation/stream": {
            "post": {
                "summary": "One turn, streamed while it is made (Server-Sent Events)",
                "description": _TURN_EVENTS,
                "requestBody": turn,
                "responses": {
                    "200": {
                        "description": _TURN_EVENTS,
                        "content": {"text/event-stream": {"schema": _ref("schemas", "TurnEvent")}},
                    },
                    **_errors(*_UPLOAD_ERRORS, 401, 404),
                },
            }
        },
        "/api/v1/conversation/{turn_id}": {
            "delete": {
                "summary": "Stop a running (or queued) turn",
                "description": "Every stage stops within a token or a chunk of frames and the models are free "
                "again when this answers; the turn leaves no files. The conversation history keeps the reply up "
                "to `played` seconds (how much the user heard), else up to what was sent. A turn already made "
                "in full (its video still playing at the client) answers `finished`: with `played`, while it is "
                "its session's newest turn, the history keeps its reply up to there; without, 404.",
                "parameters": [
                    {"name": "turn_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "played",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
                        "description": "Seconds of the reply the user heard.",
                    },
                ],
                "responses": {
                    "200": {"description": "Stopped.", **_json("Cancelled")},
                    **_errors(401, 403, 404, 422),
                },
            }
        },
        "/api/v1/personas": {
            "get": {
                "summary": "The personas: bundled ones, then those created from photos (newest first)",
                "description": "With API keys, the created personas listed are the caller's own (an admin key: "
                "all); with keys off, none (a created persona is reached by its unguessable name).",
                "responses": {
                    "200": {"description": "Personas and the default.", **_json("Personas")},
                    **_errors(401),
                },
            },
            "post": {
                "summary": "A new persona from a photo (bring your own photo)",
                "description": "The photo is checked (type, bytes, pixels) before it is decoded; the face is "
                "found and prepared once (the largest, when there are several). The persona is usable at once "
                "in every route, expires AVATAR_PERSONA_TTL_SECONDS after its last use, and at most "
                "AVATAR_MAX_PERSONAS are kept (the least recently used goes first). `knowledge` is what the "
                "person knows about themself (a biography, facts, label texts): the persona answers about "
                "itself only from it. Over 50,000 characters is 422; a file part that is not UTF-8 text, 400; "
                "empty is no knowledge. consent=true confirms the uploader may use the photo (422 without).",
                "requestBody": _form(
                    {
                        "image": {**_IMAGE_FILE, "description": "A portrait (JPEG, PNG or WebP) with a face."},
                        "name": {"type": "string", "maxLength": 64, "description": "How the persona is called."},
                        "system_prompt": {"type": "string", "maxLength": 2000},
                        "language": {"type": "string", "pattern": "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"},
                        "knowledge": {
                            "type": "string",
                            "maxLength": MAX_KNOWLEDGE_CHARS,
                            "description": "What the person knows about themself, as text or a .txt/.md file "
                            "part (UTF-8); up to 4,000 characters go into the prompt whole, longer knowledge is "
                            "searched for each question.",
                        },
                        "voice": {
                            "oneOf": [
                                {**_VOICE, "description": "A voice name from GET /api/v1/voices (422 if unknown)."},
                                {**_AUDIO_FILE, "description": "3-30 s of the voice, for voice-cloning engines."},
                            ],
                            "description": "The persona's voice: a voice name from GET /api/v1/voices as a text "
                            "field (an unknown one is 422 naming them), or a voice sample as a file part (XTTS).",
                        },
                        "consent": {
                            "const": "true",
                            "description": "The uploader confirms they have the right to use this person's photo "
                            "(and that the videos made from it are labelled as AI-generated).",
                        },
                    },
                    ["image", "consent"],
                ),
                "responses": {
                    "201": {
                        "description": "The persona; Location names it.",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        **_json("Persona"),
                    },
                    **_errors(*_UPLOAD_ERRORS, 401),
                },
            },
        },
        "/api/v1/personas/{persona}": {
            "get": {
                "summary": "One persona",
                "parameters": [_PERSONA_PATH],
                "responses": {"200": {"description": "The persona.", **_json("Persona")}, **_errors(401, 404)},
            },
            "delete": {
                "summary": "Remove a created persona (bundled ones stay)",
                "parameters": [_PERSONA_PATH],
                "responses": {"204": {"description": "Removed."}, **_errors(401, 403, 404, 422)},
            },
        },
        "/api/v1/personas/{persona}/image": {
            "get": {
                "summary": "A persona's photo",
                "parameters": [_PERSONA_PATH, _PICTURE_TOKEN],
                "security": [],
                "responses": {"200": {"description": "The photo.", "content": {"image/*": {}}}, **_errors(404, 422)},
            }
        },
        "/api/v1/personas/{persona}/face.jpg": {
            "get": {
                "summary": "The persona's face as the talking head frames it at rest",
                "parameters": [_PERSONA_PATH, _PICTURE_TOKEN],
                "security": [],
                "responses": {
                    "200": {"description": "A JPEG: the video's first picture.", "content": {"image/jpeg": {}}},
                    **_errors(404, 422, 503),
                },
            }
        },
        "/api/v1/results/{result_id}/segments/{index}.m4s": {
            "get": {
                "summary": "One segment of a streamed turn's fragmented MP4 (while the turn runs, and after)",
                "parameters": [
                    _RESULT_ID,
                    {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                ],
                "security": [],
                "responses": {
                    "200": {"description": "The segment's MP4 boxes.", "content": {"video/mp4": {}}},
                    **_errors(404),
                },
            }
        },
        "/api/v1/results/{result_id}": {
            "get": {
                "summary": "A finished turn's summary",
                "description": "With API keys, only the key that made the turn (or an admin key) sees it; "
                "another key gets 404.",
                "parameters": [_RESULT_ID],
                "responses": {"200": {"description": "The summary.", **_json("TurnSummary")}, **_errors(401, 404)},
            }
        },
        "/api/v1/results/{result_id}/video.mp4": _file_download("video/mp4", "video (H.264 + AAC MP4)"),
        "/api/v1/results/{result_id}/audio.wav": _file_download("audio/wav", "voice (16-bit PCM WAV)"),
        "/api/v1/transcribe": {
            "post": {
                "summary": "Speech recognition alone: audio → text",
                "requestBody": _form({"audio": _AUDIO_FILE, "language": _LANGUAGE}, ["audio"]),
                "responses": {
                    "200": {"description": "The transcript.", **_json("Transcription")},
                    **_errors(*_UPLOAD_ERRORS, 401),
                },
            }
        },
        "/api/v1/chat": {
            "post": {
                "summary": "The language model alone: text → the persona's reply",
                "requestBody": _form(
                    {"text": text, "persona": _PERSONA, "session_id": _SESSION},
                    ["text"],
                    fields_only=("text", "persona", "session_id"),
                ),
                "responses": {
                    "200": {"description": "The reply.", **_json("ChatReply")},
                    **_errors(*_UPLOAD_ERRORS, 401, 404),
                },
            }
        },
        "/api/v1/speak": {
            "post": {
                "summary": "Speech synthesis alone: text → the persona's voice",
                "requestBody": _form(
                    {"text": text, "persona": _PERSONA, "voice": _VOICE},
                    ["text"],
                    fields_only=("text", "persona", "voice"),
                ),
                "responses": {
                    "200": {
                        "description": "16-bit PCM mono WAV; X-Audio-Seconds gives its length, X-Voice the voice "
                        "that spoke, X-Voice-Note (only then) that it speaks another language than the persona.",
                        "content": {"audio/wav": {}},
                        "headers": {
                            "X-Audio-Seconds": {"schema": {"type": "string"}},
                            "X-Voice": {"schema": {"type": "string"}},
                            "X-Voice-Note": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(*_UPLOAD_ERRORS, 401, 404),
                },
            }
        },
        "/api/v1/voices": {
            "get": {
                "summary": "The voices a persona can speak with (none for a voice-cloning engine)",
                "responses": {"200": {"description": "The voices and the default.", **_json("Voices")}, **_errors(401)},
            }
        },
        "/api/v1/voices/{voice}/sample.wav": {
            "get": {
                "summary": "A few seconds of a voice (made once, on first asking)",
                "parameters": [
                    {
                        "name": "voice",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"},
                    }
                ],
                "responses": {
                    "200": {"description": "16-bit PCM mono WAV.", "content": {"audio/wav": {}}},
                    **_errors(401, 404, 503),
                },
            }
        },
        "/api/v1/animate": {
            "post": {
                "summary": "The talking head alone: audio + persona (or a photo) → MP4",
                "requestBody": _form({"audio": _AUDIO_FILE, "persona": _PERSONA, "image": _IMAGE_FILE}, ["audio"]),
                "responses": {
                    "200": {
                        "description": "The MP4. It is kept as a result too: Content-Location names its URL "
                        "(seekable with Range) and X-Result-ID its id.",
                        "content": {"video/mp4": {}},
                        "headers": {
                            "Content-Location": {"schema": {"type": "string"}},
                            "X-Result-ID": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(*_UPLOAD_ERRORS, 401, 404),
                },
            }
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "pattern": "^[a-z_]+$", "description": "Stable, machine-readable."},
                    "message": {"type": "string", "description": "For people: what is wrong, what to do."},
                    "request_id": {"type": "string", "description": "Only on 500: quote it in a report."},
                },
            }
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "ModelState": {
        "type": "object",
        "required": ["state"],
        "properties": {
            "backend": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "state": {"enum": ["pending", "loading", "warming", "ready", "failed", "closed"]},
            "error": {"type": ["string", "null"]},
            "load_seconds": {"type": ["number", "null"]},
            "warm_seconds": {"type": ["number", "null"]},
            "health": {
                "enum": ["ok", "failing", "hung"],
                "description": "failing: its last calls all failed; hung: a call outlived its time limit.",
            },
            "failures_in_a_row": {"type": "integer", "minimum": 0},
            "last_error": {"type": ["string", "null"]},
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "models", "queue"],
        "properties": {
            "status": {
                "enum": ["loading", "ready", "failed", "unhealthy", "busy", "storage_full", "session_store_unavailable"]
            },
            "reason": {"type": "string", "description": "Why the replica is not ready (absent when it is)."},
            "models": {"type": "object", "additionalProperties": _ref("schemas", "ModelState")},
            "error": {"type": "string", "description": "Why start-up failed, when it did."},
            "live": {
                "type": "object",
                "description": "Live mode: what ends a user's turn. `using` is `silence` when the turn-end "
                "model is off, still loading, or failed to load (`error` says why); it never makes this 503.",
                "properties": {
                    "turn_detector": {
                        "type": "object",
                        "required": ["configured", "using", "state"],
                        "properties": {
                            "configured": {"enum": ["smart-turn", "silence"]},
                            "using": {"enum": ["smart-turn", "silence"]},
                            "state": {"enum": ["off", "loading", "ready", "failed"]},
                            "error": {"type": "string"},
                            "failed_calls": {"type": "integer", "minimum": 1},
                        },
                    }
                },
            },
            "queue": {
                "type": "object",
                "required": ["running", "waiting", "limit"],
                "description": "Requests for the models: one runs at a time, at most `limit` wait; past that "
                "they are answered 503 busy and /readyz is 503 busy.",
                "properties": {
                    "running": {"type": "integer", "minimum": 0},
                    "waiting": {"type": "integer", "minimum": 0},
                    "limit": {"type": "integer", "minimum": 0},
                },
            },
            "threads": {
                "type": "object",
                "description": "The llama.cpp LLM's thread counts as the service set them for the cores other "
                "processes leave free (docs/models.md, 'Threads on a busy machine'), and why; never makes this 503. "
                "Absent for an LLM whose threads cannot change.",
                "properties": {
                    "adapting": {"type": "boolean"},
                    "llm_writing": {"type": "integer", "minimum": 1},
                    "llm_reading": {"type": "integer", "minimum": 1},
                    "configured": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "engine_waits": {"enum": ["spinning", "passively"]},
                    "changes": {"type": "integer", "minimum": 0},
                    "threads": {"type": "integer", "minimum": 1, "description": "the decision: at most this many"},
                    "cores": {"type": "number", "description": "cores this process may use (affinity, CPU quota)"},
                    "others_busy_cores": {"type": ["number", "null"], "description": "other processes' use, 2 s mean"},
                    "reason": {"type": "string"},
                    "error": {"type": "string", "description": "why the adaptation stopped, if it did"},
                },
            },
        },
    },
    "Timings": {
        "type": "object",
        "description": "Seconds per stage (asr, llm, tts, avatar, mux), to the first frame, and in total.",
        "additionalProperties": {"type": "number"},
    },
    "TurnSummary": {
        "type": "object",
        "required": ["id", "session_id", "persona", "reply", "audio_seconds", "timings", "video_url", "audio_url"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "session_id": {"type": "string"},
            "persona": {"type": "string"},
            "transcript": {"type": ["string", "null"], "description": "null for typed input."},
            "reply": {"type": "string"},
            "audio_seconds": {"type": "number"},
            "timings": _ref("schemas", "Timings"),
            "rtf": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "Real-time factor (processing s / media s) per stage.",
            },
            "models": {"type": "object", "additionalProperties": {"type": "string"}},
            "degraded": _ref("schemas", "Degraded"),
            "video_format": {"enum": ["h264", "vp9"]},
            "segments": {"type": "integer", "minimum": 0},
            "video_url": {
                "type": ["string", "null"],
                "format": "uri-reference",
                "description": "Relative to the server (/api/v1/results/<id>/video.mp4), or absolute under "
                "AVATAR_PUBLIC_URL when that is set; null for a text-only reply (the voice failed).",
            },
            "audio_url": {"type": ["string", "null"], "format": "uri-reference"},
            "voice": {"type": ["string", "null"], "description": "The voice that spoke (null: the engine's own)."},
            "voice_note": {
                "type": ["string", "null"],
                "description": "Set when the voice speaks another language than the persona's.",
            },
        },
    },
    "Transcription": {
        "type": "object",
        "required": ["text", "language", "audio_seconds", "segments", "timings"],
        "properties": {
            "text": {"type": "string"},
            "language": {"type": "string"},
            "audio_seconds": {"type": "number"},
            "segments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["start", "end", "text"],
                    "properties": {"start": {"type": "number"}, "end": {"type": "number"}, "text": {"type": "string"}},
                },
            },
            "timings": _ref("schemas", "Timings"),
        },
    },
    "ChatReply": {
        "type": "object",
        "required": ["session_id", "persona", "reply", "timings", "degraded"],
        "properties": {
            "session_id": {"type": "string"},
            "persona": {"type": "string"},
            "reply": {"type": "string"},
            "timings": _ref("schemas", "Timings"),
            "degraded": _ref("schemas", "Degraded"),
        },
    },
    "Degraded": {
        "type": "array",
        "description": "What fell back instead of failing the turn: llm_fallback (the persona's fallback line), "
        "tts_failed (the rest of the reply is text only), face_failed (a still picture speaks).",
        "items": {
            "type": "object",
            "required": ["code", "stage", "reason"],
            "properties": {
                "code": {"enum": ["llm_fallback", "tts_failed", "face_failed"]},
                "stage": {"enum": ["llm", "tts", "face"]},
                "reason": {"type": "string"},
            },
        },
    },
    "TurnEvent": {
        "type": "object",
        "description": "One Server-Sent Event of a streamed turn; data is JSON (see the operation).",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": ["queued", "started", "transcript", "reply", "segment", "done", "error"]},
            "data": {"type": "string", "contentMediaType": "application/json"},
        },
    },
    "Cancelled": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["cancelled", "finished"]},
            "heard": {"type": "string", "description": "For a finished turn: the reply as the history now keeps it."},
        },
    },
    "Persona": {
        "type": "object",
        "required": ["name", "display_name", "image_url"],
        "properties": {
            "name": {"type": "string"},
            "display_name": {"type": "string"},
            "language": {"type": "string"},
            "voice": {"type": ["string", "null"], "description": "Its voice (GET /api/v1/voices); null: the default."},
            "voice_note": {"type": "string", "description": "Only when created: the voice speaks another language."},
            "has_voice_sample": {"type": "boolean"},
            "knowledge": {
                "type": "object",
                "description": "How much the persona knows about itself: characters, and the passages it is "
                "searched in (1 when it goes into the prompt whole, 0 for none).",
                "required": ["chars", "passages"],
                "properties": {"chars": {"type": "integer"}, "passages": {"type": "integer"}},
            },
            "created": {"type": "boolean", "description": "Made from an uploaded photo (it expires)."},
            "expires": {"type": ["integer", "null"], "description": "When it goes, seconds since the epoch."},
            "image_url": {"type": "string", "format": "uri-reference"},
            "face_url": {"type": "string", "format": "uri-reference"},
            "faces_found": {"type": "integer", "description": "Only when created: faces in the photo."},
            "note": {"type": "string"},
        },
    },
    "Voice": {
        "type": "object",
        "required": ["name", "gender", "language", "engine", "sample_url"],
        "properties": {
            "name": {"type": "string"},
            "engine": {"enum": ["hibari", "kokoro"]},
            "gender": {"enum": ["female", "male"]},
            "language": {"type": "string", "description": "The language it speaks (as a persona's language)."},
            "accent": {"type": "string"},
            "description": {"type": "string"},
            "sample_url": {"type": "string", "format": "uri-reference"},
        },
    },
    "Voices": {
        "type": "object",
        "required": ["engine", "default", "voices"],
        "properties": {
            "engine": {"type": "string", "description": "AVATAR_TTS_BACKEND"},
            "default": {"type": ["string", "null"]},
            "voices": {"type": "array", "items": _ref("schemas", "Voice")},
        },
    },
    "Personas": {
        "type": "object",
        "required": ["default", "personas"],
        "properties": {
            "default": {"type": "string"},
            "personas": {"type": "array", "items": _ref("schemas", "Persona")},
        },
    },
}


def _live() -> tuple[dict[str, Any], dict[str, Any]]:
    """Live mode (WebRTC signalling): its paths and schemas, kept apart from the rest of the document."""
    paths = {
        "/api/v1/live": {
            "get": {
                "summary": "What a live client needs before its offer: ICE servers, open and allowed sessions",
                "responses": {"200": {"description": "Live mode's settings.", **_json("LiveInfo")}, **_errors(401)},
            },
            "post": {
                "summary": "Open a live session: the client's SDP offer in, the server's answer out",
                "description": "The offer sends the microphone (audio, sendrecv, Opus), receives the face "
                "(video, recvonly, VP8) and carries a data channel the client creates, on which the server "
                "sends JSON events (listening, user_speech_started, transcript, end_of_turn, reply, speaking, "
                "interrupted, resumed, timings, error, closed) and takes {type: say|stop}. Gather ICE candidates "
                "before sending the offer (no trickle). An offer WebRTC cannot use (no a=fingerprint, a candidate's "
                "address, port, component or priority out of range, a payload type outside 0-127, more than "
                f"{MAX_CANDIDATES} candidates) is 400 invalid_sdp, before anything starts. 503 busy (with "
                "Retry-After) when "
                "AVATAR_MAX_LIVE_SESSIONS sessions are open; 503 live_unavailable when live mode is off. "
                "See docs/api.md, 'Live mode'.",
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("schemas", "LiveOffer")}}},
                "responses": {
                    "200": {"description": "The SDP answer.", **_json("LiveAnswer")},
                    **_errors(*_UPLOAD_ERRORS, 401, 404),
                },
            },
        }
    }
    schemas = {
        "LiveOffer": {
            "type": "object",
            "required": ["sdp", "type"],
            "properties": {
                "sdp": {"type": "string", "description": "RTCPeerConnection.localDescription.sdp of the offer."},
                "type": {"const": "offer"},
                "persona": _PERSONA,
                "session_id": _SESSION,
            },
        },
        "LiveAnswer": {
            "type": "object",
            "required": ["sdp", "type", "session_id", "live_session"],
            "properties": {
                "sdp": {"type": "string"},
                "type": {"const": "answer"},
                "session_id": {"type": "string", "description": "The conversation (history) the session uses."},
                "live_session": {"type": "string", "description": "This connection's id (in the server's logs)."},
            },
        },
        "LiveInfo": {
            "type": "object",
            "required": ["ice_servers", "sessions", "max_sessions", "end_silence_ms", "turn_detector"],
            "properties": {
                "ice_servers": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "For RTCPeerConnection({iceServers}): AVATAR_LIVE_ICE_SERVERS.",
                },
                "sessions": {"type": "integer"},
                "max_sessions": {"type": "integer"},
                "end_silence_ms": {
                    "type": "integer",
                    "description": "The silence rule's wait (with `turn_detector: silence`, or when the model fails).",
                },
                "turn_detector": {
                    "enum": ["smart-turn", "silence"],
                    "description": "What ends a user's turn now: each pause judged, or silence alone.",
                },
            },
        },
    }
    return paths, schemas


def _error_responses() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, (name, description) in ERROR_RESPONSES.items():
        response: dict[str, Any] = {"description": description, **_json("Error")}
        if status in _WITH_RETRY_AFTER:
            response["headers"] = _RETRY_AFTER
        elif status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        elif status == 416:
            response["headers"] = {"Content-Range": {"schema": {"type": "string"}}}
        out[name] = response
    return out


def document(settings: Settings | None = None, *, api_keys: bool = False) -> dict[str, Any]:
    """The OpenAPI document for a server with ``settings``; ``api_keys``: whether keys are configured
    (the /api/ operations then require a bearer key, except fetching results)."""
    settings = settings or Settings()
    live_paths, live_schemas = _live()
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "avatar",
            "version": VERSION,
            "description": "Talk to a photo: a spoken or typed question in, a talking-head video reply out. "
            'Every error is {"error": {"code", "message"}} with the status given here. Form bodies: '
            "multipart/form-data (files and fields); the text-only routes also take "
            "application/x-www-form-urlencoded or a JSON object of strings. A field may appear once.",
        },
        "paths": {**_paths(settings), **live_paths},
        "components": {"schemas": {**copy.deepcopy(_SCHEMAS), **live_schemas}, "responses": _error_responses()},
    }
    if api_keys:
        doc["components"]["securitySchemes"] = {
            "bearerKey": {"type": "http", "scheme": "bearer", "description": "An API key from the operator."}
        }
        doc["security"] = [{"bearerKey": []}]
    else:  # an open server: no operation asks for a key, and none can be refused for lack of one
        for operations in doc["paths"].values():
            for operation in operations.values():
                operation.pop("security", None)
                operation["responses"].pop("401", None)
    return doc
