"""Lambda entry points (``handler(event, context)``), one module per function."""
