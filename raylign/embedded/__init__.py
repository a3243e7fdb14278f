"""The embedded default: a bundled CARES-schema prompt set and a tiny model built and cached locally."""
