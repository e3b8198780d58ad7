"""The asyncio side: WebSocket sessions, the HTTP API, heartbeats and back-pressure."""
