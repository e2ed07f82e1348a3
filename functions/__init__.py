"""Lambda entry points: one module per Rekognition operation, each a single line."""
