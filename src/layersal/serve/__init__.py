"""A local web app for looking at explanations: ``layersal serve`` or :func:`create_app`.

``create_app(layersal.load("sst2-tiny"))`` returns a FastAPI app with the page at ``/``, the
JSON API under ``/api`` and its OpenAPI description at ``/openapi.json`` (``/docs``). The model
is loaded once by the caller and shared by every request, one explanation at a time.
Needs the ``fastapi`` package (and ``uvicorn`` to serve it).
"""

from .app import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CHARS,
    DEFAULT_TIMEOUT_S,
    ExplainRequest,
    ExplainResponse,
    InfoResponse,
    create_app,
    is_loopback,
    loopback_hosts,
)
from .card import render_html

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_CHARS",
    "DEFAULT_TIMEOUT_S",
    "ExplainRequest",
    "ExplainResponse",
    "InfoResponse",
    "create_app",
    "is_loopback",
    "loopback_hosts",
    "render_html",
]
