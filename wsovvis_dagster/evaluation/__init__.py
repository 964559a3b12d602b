"""Stage 5, scoring tubes: YouTube-VIS video AP and DAVIS J (`wsovvis quality`)."""
