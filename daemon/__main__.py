"""``python -m ai_analytics.daemon`` is ``ai-analyticsd``."""

from ai_analytics.daemon.main import main

main()
