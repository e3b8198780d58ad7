"""companion-hub: a state-first hub between Bitfocus Companion and the applications around it."""

__version__ = "0.1.0"
SERVER_NAME = f"companion-hub {__version__}"
