"""Segments, campaigns, journeys and the dispatch of per-store guide tasks."""
