"""Stage 3, mask PNGs: the predictor loop, imported masks, the PNG format, previews."""
