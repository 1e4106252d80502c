"""The HTTP API: thin handlers that parse, call a service, and answer JSON."""
