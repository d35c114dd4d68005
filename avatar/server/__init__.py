"""The HTTP service: one Starlette app in one uvicorn process, models loaded once and kept warm."""

from avatar.server.app import create_app, serve

__all__ = ["create_app", "serve"]
