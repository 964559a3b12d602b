"""Partition definitions, declared once."""

from dagster import DynamicPartitionsDefinition

# One partition per video; key = "<split>__<video_id>" (see wsovvis_dagster.paths.VideoRef).
videos_partitions = DynamicPartitionsDefinition(name="videos")
