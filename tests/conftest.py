"""Shared fixtures live in tests/fixtures/, one plugin module per component they start."""

pytest_plugins = [
    "tests.fixtures.alert_receivers",
    "tests.fixtures.chromium",
    "tests.fixtures.sandbox",
    "tests.fixtures.secret_manager",
    "tests.fixtures.warehouse",
]
