"""Redis/Valkey: key layout, Functions, the embedded server, the relay and the audit."""
