"""ai_analytics.integrations: one line to instrument a server.

- ``ai_analytics.integrations.asgi.AnalyticsMiddleware``: FastAPI, Starlette, any ASGI 3 app;
- ``ai_analytics.integrations.wsgi.AnalyticsMiddleware``: Flask, Django, any WSGI app.

Each request becomes one ``client.timed`` event, named after its route template (see
``_naming``). They import the client only, and no web framework: the protocols are enough.
"""
