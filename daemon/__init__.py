"""ai_analytics.daemon: ai-analyticsd (drain, count, state) and the ai-analytics CLI.

Nothing here is imported by inference workers; see ``ai_analytics.client`` for that side.
"""
