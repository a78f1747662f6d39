"""Settings of a minimal Django site served by gunicorn in tests/e2e/test_wsgi_servers.py
(``DJANGO_SETTINGS_MODULE=django_site``, ``django_wsgi:application``)."""

SECRET_KEY = "only-for-tests"  # a test site, on loopback only
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "django_urls"
MIDDLEWARE = ["ai_analytics.integrations.django.RouteMiddleware"]
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict] = {}
TEMPLATES: list[dict] = []
USE_TZ = True
