"""GPU runtime of the mask and training runs: slot leases, run tags and sizing, the
predictor worker and its socket."""
