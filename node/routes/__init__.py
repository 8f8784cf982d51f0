"""The node's HTTP routes, one module per resource. ``register`` adds them all to an app
that ``node.http.build_app`` made; the modules share only ``node.routes.common``."""

from __future__ import annotations

from aiohttp import web

from dashboard.apidocs import add_api_docs
from memorose.api.openapi import document
from node.routes import admin, cluster, dashboard, events, graph_insights, mem0, memories, retrieval


def register(app: web.Application) -> None:
    """Every route of the node (the dashboard last: it mounts its static files)."""
    for module in (events, retrieval, memories, cluster, admin, graph_insights):
        module.register(app)
    add_api_docs(app, document())
    mem0.register(app)
    dashboard.register(app, app[dashboard.SERVICE])
