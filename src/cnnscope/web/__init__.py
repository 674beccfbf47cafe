"""The read-only web viewer of an atlas (``cnnscope serve DIR``): pages, a JSON API and the explain page."""

from .app import create_app
from .server import RunningServer, serve, start_server

__all__ = ["RunningServer", "create_app", "serve", "start_server"]
