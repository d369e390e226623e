"""model → metrics: the bundled evaluation data (``data``), how models are evaluated (``settings``),
STS-B as the seed scores it (``stsb``), MTEB tasks through mteb (``mteb_tasks``), one model's
evaluation (``evaluate``)."""
