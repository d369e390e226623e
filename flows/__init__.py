"""The flows, and what every way of starting them shares.

A flow called from Python (``from flows.compare_losses import compare_losses; compare_losses()``) starts
Prefect's temporary server like the CLI does; its first start migrates a new database, which on a loaded
2-core machine takes longer than Prefect's 20 s. Prefect reads its settings when it is first imported, so
the longer wait is set here, before any flow module imports it (a value the user set is kept).
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
