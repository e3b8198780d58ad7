"""The Bitfocus Companion adapter: Satellite protocol + HTTP remote-control API."""
