"""Protocol v1 wire messages: decoding with validation, and encoding (once per change)."""
