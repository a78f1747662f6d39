"""``python -m ai_analytics.daemon`` is ``ai-analyticsd``."""

from .main import main

main()
