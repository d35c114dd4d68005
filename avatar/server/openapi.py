"""The OpenAPI 3.1 description of the service, written by hand (a test checks every route is here)."""

from __future__ import annotations

import copy
from typing import Any

from avatar import __version__ as VERSION

JSON = "application/json"
FORM = "multipart/form-data"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: str) -> dict[str, Any]:
    return {"content": {JSON: {"schema": _ref("schemas", schema)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "BadRequest",
        404: "NotFound",
        413: "PayloadTooLarge",
        415: "UnsupportedMediaType",
        422: "Unprocessable",
        500: "InternalError",
        503: "NotReady",
    }
    return {str(status): _ref("responses", names[status]) for status in (*statuses, 500)}


def _form(properties: dict[str, Any], required: list[str] | None = None, *, text_only: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    content: dict[str, Any] = {FORM: {"schema": schema}}
    if text_only:  # fields only: the usual form encodings and JSON work as well
        content["application/x-www-form-urlencoded"] = {"schema": schema}
        content[JSON] = {"schema": schema}
    return {"required": True, "content": content}


_AUDIO_FILE = {
    "type": "string",
    "contentMediaType": "application/octet-stream",
    "description": "Recorded speech in any format FFmpeg decodes (WAV, MP3, OGG/Opus, FLAC, M4A, WebM). "
    "The part's content type must be audio/*, video/*, application/ogg, application/octet-stream or absent.",
}
_PERSONA = {"type": "string", "description": "A persona name from GET /api/v1/personas; default: the configured one."}
_SESSION = {
    "type": "string",
    "description": "The session_id of an earlier reply, to continue that conversation. An unknown or "
    "expired id (or one of another persona) starts a new session.",
}
_TEXT = {"type": "string", "description": "What the user says, typed (at most AVATAR_MAX_TEXT_CHARS characters)."}

_RETRY_AFTER = {
    "headers": {
        "Retry-After": {
            "description": "Seconds to wait before sending the request again (busy and shutting_down).",
            "schema": {"type": "integer"},
        }
    }
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


def _file_download(media_type: str, what: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": f"The reply's {what}",
            "parameters": [_RESULT_ID, _RANGE_HEADER],
            "responses": {
                "200": {"description": f"The whole {what}.", "content": {media_type: {}}},
                "206": {
                    "description": "The requested byte range (Content-Range says which).",
                    "content": {media_type: {}},
                },
                "416": {"description": "The range lies outside the file."},
                **_errors(404),
            },
        }
    }


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "avatar",
        "version": VERSION,
        "description": "Talk to a photo: a spoken or typed question in, a talking-head video reply out. "
        'Every error is {"error": {"code", "message"}} with the status given here.',
    },
    "paths": {
        "/healthz": {
            "get": {
                "summary": "Liveness: the process and its event loop answer",
                "responses": {"200": {"description": "Alive.", **_json("Health")}, **_errors()},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: every model loaded and warm",
                "responses": {
                    "200": {"description": "Ready to serve.", **_json("Readiness")},
                    "503": {"description": "Still loading, or a model failed to load.", **_json("Readiness")},
                    **_errors(),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document.", "content": {JSON: {}}}, **_errors()},
            }
        },
        "/api/v1/conversation": {
            "post": {
                "summary": "One whole turn: question (audio or text) → the persona's video reply",
                "requestBody": _form(
                    {"audio": _AUDIO_FILE, "text": _TEXT, "persona": _PERSONA, "session_id": _SESSION}
                ),
                "responses": {
                    "200": {
                        "description": "The turn's summary and the URLs of its MP4 and WAV.",
                        **_json("TurnSummary"),
                    },
                    **_errors(400, 404, 413, 415, 422, 503),
                },
            }
        },
        "/api/v1/personas": {
            "get": {
                "summary": "The installed personas",
                "responses": {"200": {"description": "Personas and the default.", **_json("Personas")}, **_errors()},
            }
        },
        "/api/v1/results/{result_id}": {
            "get": {
                "summary": "A finished turn's summary",
                "parameters": [_RESULT_ID],
                "responses": {"200": {"description": "The summary.", **_json("TurnSummary")}, **_errors(404)},
            }
        },
        "/api/v1/results/{result_id}/video.mp4": _file_download("video/mp4", "video (H.264 + AAC MP4)"),
        "/api/v1/results/{result_id}/audio.wav": _file_download("audio/wav", "voice (16-bit PCM WAV)"),
        "/api/v1/transcribe": {
            "post": {
                "summary": "Speech recognition alone: audio → text",
                "requestBody": _form(
                    {"audio": _AUDIO_FILE, "language": {"type": "string", "description": "e.g. en; default: detect"}},
                    ["audio"],
                ),
                "responses": {
                    "200": {"description": "The transcript.", **_json("Transcription")},
                    **_errors(400, 413, 415, 422, 503),
                },
            }
        },
        "/api/v1/chat": {
            "post": {
                "summary": "The language model alone: text → the persona's reply",
                "requestBody": _form(
                    {"text": _TEXT, "persona": _PERSONA, "session_id": _SESSION}, ["text"], text_only=True
                ),
                "responses": {
                    "200": {"description": "The reply.", **_json("ChatReply")},
                    **_errors(400, 404, 413, 415, 422, 503),
                },
            }
        },
        "/api/v1/speak": {
            "post": {
                "summary": "Speech synthesis alone: text → the persona's voice",
                "requestBody": _form({"text": _TEXT, "persona": _PERSONA}, ["text"], text_only=True),
                "responses": {
                    "200": {
                        "description": "16-bit PCM mono WAV; X-Audio-Seconds gives its length.",
                        "content": {"audio/wav": {}},
                        "headers": {"X-Audio-Seconds": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 404, 413, 415, 422, 503),
                },
            }
        },
        "/api/v1/animate": {
            "post": {
                "summary": "The talking head alone: audio + persona (or a photo) → MP4",
                "requestBody": _form(
                    {
                        "audio": _AUDIO_FILE,
                        "persona": _PERSONA,
                        "image": {
                            "type": "string",
                            "contentMediaType": "image/*",
                            "description": "A photo with one face (JPEG, PNG…), instead of a persona.",
                        },
                    },
                    ["audio"],
                ),
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
                    **_errors(400, 404, 413, 415, 422, 503),
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "description": "Stable, machine-readable."},
                            "message": {"type": "string", "description": "For people: what is wrong, what to do."},
                            "request_id": {"type": "string", "description": "Only on 500: quote it in a report."},
                        },
                    }
                },
            },
            "Health": {"type": "object", "properties": {"status": {"const": "ok"}}},
            "ModelState": {
                "type": "object",
                "properties": {
                    "backend": {"type": "string"},
                    "name": {"type": ["string", "null"]},
                    "state": {"enum": ["pending", "loading", "warming", "ready", "failed", "closed"]},
                    "error": {"type": ["string", "null"]},
                    "load_seconds": {"type": ["number", "null"]},
                    "warm_seconds": {"type": ["number", "null"]},
                },
            },
            "Readiness": {
                "type": "object",
                "required": ["status", "models"],
                "properties": {
                    "status": {"enum": ["loading", "ready", "failed"]},
                    "models": {"type": "object", "additionalProperties": _ref("schemas", "ModelState")},
                    "error": {"type": "string", "description": "Why start-up failed, when it did."},
                    "queue": {
                        "type": "object",
                        "description": "Requests for the models: one runs at a time, at most `limit` wait; "
                        "past that they are answered 503 busy.",
                        "properties": {
                            "running": {"type": "integer"},
                            "waiting": {"type": "integer"},
                            "limit": {"type": "integer"},
                        },
                    },
                },
            },
            "Timings": {
                "type": "object",
                "description": "Seconds per stage (asr, llm, tts, avatar, mux) and in total.",
                "additionalProperties": {"type": "number"},
            },
            "TurnSummary": {
                "type": "object",
                "required": [
                    "id",
                    "session_id",
                    "persona",
                    "reply",
                    "audio_seconds",
                    "timings",
                    "video_url",
                    "audio_url",
                ],
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
                    "degraded": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "e.g. llm_fallback: the model failed, a stock reply was used.",
                    },
                    "video_url": {"type": "string", "format": "uri"},
                    "audio_url": {"type": "string", "format": "uri"},
                },
            },
            "Transcription": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "language": {"type": "string"},
                    "audio_seconds": {"type": "number"},
                    "segments": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "start": {"type": "number"},
                                "end": {"type": "number"},
                                "text": {"type": "string"},
                            },
                        },
                    },
                    "timings": _ref("schemas", "Timings"),
                },
            },
            "ChatReply": {
                "type": "object",
                "properties": {
                    "session_id": {"type": "string"},
                    "persona": {"type": "string"},
                    "reply": {"type": "string"},
                    "timings": _ref("schemas", "Timings"),
                    "degraded": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Personas": {
                "type": "object",
                "properties": {
                    "default": {"type": "string"},
                    "personas": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "display_name": {"type": "string"},
                                "language": {"type": "string"},
                                "has_voice_sample": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
        "responses": {
            name: {"description": description, **_json("Error"), **(_RETRY_AFTER if name == "NotReady" else {})}
            for name, description in {
                "BadRequest": "invalid_audio, invalid_image or malformed_request: the upload cannot be read.",
                "NotFound": "unknown_persona, or not_found: no such result (unknown, malformed or expired id).",
                "PayloadTooLarge": "payload_too_large: the body exceeds AVATAR_MAX_UPLOAD_MB (checked while it "
                "streams).",
                "UnsupportedMediaType": "unsupported_media_type: the request or a file part has a content type "
                "this endpoint does not take.",
                "Unprocessable": "invalid_request (a field missing or wrong), no_speech (nothing said in the "
                "audio) or no_face (no face in the photo).",
                "NotReady": "not_ready: the models are loading (or failed); see GET /readyz. busy: "
                "AVATAR_MAX_QUEUED_REQUESTS requests already wait for the models; retry after the Retry-After "
                "header's seconds. shutting_down: the request was cut off by a shutdown; send it again.",
                "InternalError": "internal_error: a bug; the body carries the request id.",
            }.items()
        },
    },
}


def _live() -> tuple[dict[str, Any], dict[str, Any]]:
    """Live mode (WebRTC signalling): its paths and schemas, kept apart from the rest of the document."""
    paths = {
        "/api/v1/live": {
            "get": {
                "summary": "What a live client needs before its offer: ICE servers, open and allowed sessions",
                "responses": {"200": {"description": "Live mode's settings.", **_json("LiveInfo")}, **_errors()},
            },
            "post": {
                "summary": "Open a live session: the client's SDP offer in, the server's answer out",
                "description": "The offer sends the microphone (audio, sendrecv, Opus), receives the face "
                "(video, recvonly, VP8) and carries a data channel the client creates, on which the server "
                "sends JSON events (listening, user_speech_started, transcript, reply, speaking, "
                "interrupted, timings, error, closed) and takes {type: say|stop}. Gather ICE candidates "
                "before sending the offer (no trickle). See docs/api.md, 'Live mode'.",
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("schemas", "LiveOffer")}}},
                "responses": {
                    "200": {"description": "The SDP answer.", **_json("LiveAnswer")},
                    **_errors(400, 404, 413, 415, 422, 503),
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
            "properties": {
                "ice_servers": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "For RTCPeerConnection({iceServers}): AVATAR_LIVE_ICE_SERVERS.",
                },
                "sessions": {"type": "integer"},
                "max_sessions": {"type": "integer"},
                "end_silence_ms": {"type": "integer"},
            },
        },
    }
    return paths, schemas


_LIVE_PATHS, _LIVE_SCHEMAS = _live()
_DOCUMENT["paths"].update(_LIVE_PATHS)
_DOCUMENT["components"]["schemas"].update(_LIVE_SCHEMAS)


def document() -> dict[str, Any]:
    """A copy of the OpenAPI document (callers may add to it, e.g. a ``servers`` entry)."""
    return copy.deepcopy(_DOCUMENT)
