"""The wire protocol v1: codecs, request schemas and validation. No I/O."""
