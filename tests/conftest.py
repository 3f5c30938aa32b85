"""Settings for every test process and the processes it starts (Ray heads, trainers, workers)."""

import os

# Ray reads these when it is imported: set them before any test imports it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Local Ray clusters bind to 127.0.0.1 (single-node mode), never to the machine's network address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
