"""giftstream's load generator and benchmark: `python -m loadtest --help`, docs/performance.md."""
