"""Admin for campaigns: each area registers its models in its own module."""

from . import admin_campaigns, admin_journeys, admin_segments  # noqa: F401
