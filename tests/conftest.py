"""Test-wide settings: nothing may reach a non-loopback address."""

import os

os.environ.setdefault("SINERGI_ENVIRONMENT", "test")
os.environ.setdefault("SINERGI_LOG_JSON", "false")
