"""Test-wide environment: offline, and blind to plugins installed in the developer's environment."""

import os

# Set before any test module imports transformers or firm.plugins.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Only firm's own built-ins load unless a test opts a distribution in (monkeypatch.setenv).
os.environ["FIRM_LOAD_PLUGINS"] = ""
