"""Stage 1, video in: frame folders (read, check), `wsovvis ingest`, the synthetic set."""
