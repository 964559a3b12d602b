"""In-process Dagster runs of single assets, and reading back what they recorded."""

from __future__ import annotations

from dagster import AssetKey, materialize


def _assets():
    from definitions import defs

    return list(defs.assets)


def run(instance, resources, asset: str, *, partition: str | None = None,
        config: dict | None = None, tags: dict | None = None):
    run_config = {"ops": {asset: {"config": config}}} if config else None
    return materialize(_assets(), selection=[asset], instance=instance, resources=resources,
                       partition_key=partition, run_config=run_config, tags=tags,
                       raise_on_error=False)


def failure_text(result) -> str:
    """The step failure with its cause chain (where our typed error's message lives)."""
    events = result.get_step_failure_events()
    assert events, "expected the run to fail"
    return "\n".join(e.step_failure_data.error.to_string() for e in events)


def metadata(result, asset: str) -> dict:
    (mat,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mat.metadata.items()}


def materialized(instance, asset: str = "mask_pngs") -> set[str]:
    return set(instance.get_materialized_partitions(AssetKey(asset)))


