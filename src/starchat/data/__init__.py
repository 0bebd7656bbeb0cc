"""Data: read conversation datasets, filter, split, tokenize with loss masks, and pack."""
