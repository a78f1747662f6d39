"""The test Django site's WSGI application, behind the WSGI middleware."""

import os

from django.core.wsgi import get_wsgi_application

from ai_analytics.integrations.wsgi import AnalyticsMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site")
application = AnalyticsMiddleware(
    get_wsgi_application(), model="django-app",
    names={"GET /v1/chat/<str:name>/stream": "chat_stream"})
