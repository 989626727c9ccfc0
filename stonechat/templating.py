"""Robyn's ``robyn.templating`` module path (re-exports; the feature is ``features/templating.py``,
Jinja2 from ``pip install 'stonechat[templating]'``)."""

from .features.templating import JinjaTemplate, TemplateInterface, render

__all__ = ["JinjaTemplate", "TemplateInterface", "render"]
