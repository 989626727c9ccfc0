"""Templating: Robyn's ``JinjaTemplate``, ``TemplateInterface`` and ``render`` (Jinja2 optional).

Owns finding template directories and turning a rendered page into a ``Response``; it does
not know the server or the app. Jinja2 is imported only when an engine is made, so an app
that never renders templates needs no Jinja2 (``pip install 'stonechat[templating]'``).
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any, Optional, Union

from ..core.datastructures import Headers
from ..core.response import Response

HTML = "text/html; charset=utf-8"
INSTALL_HINT = "pip install 'stonechat[templating]'"


def _jinja2() -> Any:
    """The jinja2 module, or an ImportError that says how to get it."""
    try:
        import jinja2
    except ImportError as exc:
        raise ImportError(f"templating needs Jinja2, which is not installed: {INSTALL_HINT}") from exc
    return jinja2


class TemplateInterface(ABC):
    """What an engine offers the app: ``render_template(...) -> Response``. Subclass it to plug
    another engine into ``render(..., template_engine=...)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    @abstractmethod
    def render_template(self, *args: Any, **kwargs: Any) -> Response:
        """The rendered page as a ``Response``."""


def _caller_directory(skip_self: Any = None) -> Optional[str]:
    """The directory of the first file up the stack that is not this module (nor an
    ``__init__`` of ``skip_self``, when a subclass calls ``super().__init__``)."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_globals.get("__name__") != __name__ and not (
                    skip_self is not None and frame.f_code.co_name == "__init__"
                    and frame.f_locals.get("self") is skip_self):
                path = frame.f_globals.get("__file__")
                return os.path.dirname(os.path.abspath(path)) if path else None
            frame = frame.f_back
        return None
    finally:
        del frame


class JinjaTemplate(TemplateInterface):
    """Jinja2 templates from ``directory``; autoescaping on for ``.html``/``.htm``/``.xml``
    and for any other name too (Jinja2's ``select_autoescape(default=True)``), as in Robyn.

    A relative ``directory`` is looked up where Robyn looks (the current directory) and then
    next to the file that made the engine, so ``JinjaTemplate("templates")`` works whichever
    directory the app is started from."""

    def __init__(self, directory: Union[str, "os.PathLike[str]"], encoding: str = "utf-8",
                 followlinks: bool = False) -> None:
        jinja2 = _jinja2()
        directory = os.fspath(directory)
        searchpath = [directory]
        if not os.path.isabs(directory):
            base = _caller_directory(self)
            beside = os.path.join(base, directory) if base else None
            if beside and os.path.abspath(beside) != os.path.abspath(directory):
                searchpath.append(beside)
        self.directory = directory
        self.searchpath = searchpath
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(searchpath=searchpath, encoding=encoding, followlinks=followlinks),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html", "htm", "xml"), default=True),
        )
        self._not_found = jinja2.TemplateNotFound

    def render_template(self, template_name: str, **kwargs: Any) -> Response:  # type: ignore[override]
        """``template_name`` rendered with ``kwargs``: 200, ``text/html; charset=utf-8``. A missing
        template raises Jinja2's ``TemplateNotFound`` naming where it was looked for."""
        try:
            template = self.env.get_template(template_name)
        except self._not_found as exc:
            if exc.name != template_name:
                raise  # a template it includes is missing: Jinja2 already names that one
            where = ", ".join(os.path.abspath(p) + ("" if os.path.isdir(p) else " (no such directory)")
                              for p in self.searchpath)
            raise self._not_found(template_name, f"template {template_name!r} not found in {where}") from None
        return Response(status_code=200, description=template.render(**kwargs), headers=Headers({"Content-Type": HTML}))


@lru_cache(maxsize=None)
def _engine_for(engine: type, directory: str) -> TemplateInterface:
    """One engine per (engine class, directory), reused by every ``render`` call."""
    return engine(directory)


def render(template_name: str, *, templates_dir: str = "templates",
           template_engine: type = JinjaTemplate, **kwargs: Any) -> Response:
    """``render("index.html", name=...)``: the template from ``templates_dir`` (relative to the
    calling file unless absolute; default ``templates`` beside it), with a cached engine."""
    if not os.path.isabs(templates_dir):
        base = _caller_directory() or os.getcwd()
        templates_dir = os.path.join(base, templates_dir)
    return _engine_for(template_engine, templates_dir).render_template(template_name, **kwargs)


__all__ = ["JinjaTemplate", "TemplateInterface", "render"]
