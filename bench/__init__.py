"""fastbp benchmark suite (pytest-benchmark)."""
