"""Connections, rooms and fan-out: composes wire, domain and store over WebSockets."""
