"""Tube JSON in the YouTube-VIS format: the `tube_json` stage, between masks and evaluation.

- `format`: the YouTube-VIS layout (ground truth, results, tube JSON), its checks and RLEs;
- `tubes`: mask PNG folders -> tube JSON per split, and back;
- `results`: tube JSON -> a YouTube-VIS results list;
- `index`: the Parquet tube index written beside each tube JSON;
- `reports`: what `tube_json` writes beside a split's JSON and what its checks compute;
- `cocovid`: mmtracking's CocoVID ground truth -> YouTube-VIS.

Nothing is re-exported here, so importing one module does not import the others.
"""
