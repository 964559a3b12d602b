"""GPU runtime of the mask and training runs: slot leases (`leases`), a run's session over
them (`session`: lease, then the predictor from the slot's worker or built in the run), the
predictor worker and its socket (`worker`, `worker_socket`), a batch's workers started before
its runs (`prestart`), run tags and sizing (`run_tags`, `run_plan`)."""
