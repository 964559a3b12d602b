"""Tube JSON in the YouTube-VIS format: the `tube_json` stage, between masks and evaluation.

- `format`: the YouTube-VIS layout (ground truth, results, tube JSON), its checks and RLEs;
- `tubes`: mask PNG folders -> tube JSON, streamed (and back);
- `results`: tube JSON -> a YouTube-VIS results list;
- `index`: the Parquet tube index written beside each tube JSON;
- `linking`: relinking a predictor's per-frame ids into tracks by mask IoU;
- `split`: what `tube_json` does per split: its JSON, index and results in one pass, and the
  format check;
- `cocovid`: mmtracking's CocoVID ground truth -> YouTube-VIS.

Nothing is re-exported here, so importing one module does not import the others.
"""
