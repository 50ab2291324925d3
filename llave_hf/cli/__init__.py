"""Command-line entry points: `llave-train`, `llave-eval`, `llave-convert`."""
