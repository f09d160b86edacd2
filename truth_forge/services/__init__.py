"""Facades with the names and call shapes of the user's seed document."""
