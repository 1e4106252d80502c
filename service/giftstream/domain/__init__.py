"""Pure, synchronous rules of the gift economy. No I/O beyond reading bundled data files."""
