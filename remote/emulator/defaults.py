"""The emulator's well-known development account (as Azurite's): importable without the app."""

from __future__ import annotations

DEFAULT_ACCOUNT = "devstoreaccount1"
DEFAULT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
