"""truth-forge: keep a contacts warehouse and a Twenty CRM workspace in sync."""

__version__ = "0.1.0"
