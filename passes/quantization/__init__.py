"""Pass family (filled by later work)."""
