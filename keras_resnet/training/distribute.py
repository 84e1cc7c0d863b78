"""``tf.distribute`` strategies for ``--strategy auto|none|mirrored|multiworker``.

- ``mirrored``: ``MirroredStrategy`` over every local GPU; on a machine without GPUs but with
  several logical CPU devices (``tf.config.set_logical_device_configuration``), over those.
- ``multiworker``: ``MultiWorkerMirroredStrategy``, configured by the ``TF_CONFIG`` environment
  variable (as a Kubernetes TFJob or a launcher script sets it on every machine).
- ``auto``: ``multiworker`` when ``TF_CONFIG`` names more than one worker, ``mirrored`` when
  there are several GPUs, else none (TensorFlow's default strategy).

The strategy must exist before TensorFlow runs anything else (a multi-worker strategy
configures the collective ops at start-up), so ``fit`` makes it first.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

STRATEGIES = ("auto", "none", "mirrored", "multiworker")
_MIRRORED: dict = {}  # devices -> the process's MirroredStrategy over them


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` (empty if unset); ``ValueError`` if it is not JSON."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return config


def cluster_size(config: dict) -> int:
    cluster = config.get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def task_is_chief(config: dict) -> bool:
    """The chief writes the run directory: task ``chief``, or worker 0 when there is none."""
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and not config.get("cluster", {}).get("chief")


@dataclass
class Distribution:
    strategy: object
    name: str
    replicas: int
    is_chief: bool
    worker_index: int
    description: str


def _local_devices():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(requested: str = "auto") -> Distribution:
    """The strategy for ``requested``; ``ValueError`` with one line if it cannot be made."""
    import tensorflow as tf

    if requested not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {requested!r}")
    config = tf_config()
    name = requested
    if requested == "auto":
        if cluster_size(config) > 1:
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "none"
    if name == "none":
        strategy = tf.distribute.get_strategy()
        return Distribution(strategy, "none", 1, True, 0, "no distribution (one device)")
    if name == "mirrored":
        devices = _local_devices()
        # One per process: a second MirroredStrategy reuses the first one's collective keys,
        # so a second fit in the same process (fine-tuning's phases, tuning trials) failed
        # with "Shape mismatch in the collective instance".
        if tuple(devices) not in _MIRRORED:
            _MIRRORED[tuple(devices)] = tf.distribute.MirroredStrategy(devices=devices)
        strategy = _MIRRORED[tuple(devices)]
        return Distribution(strategy, "mirrored", strategy.num_replicas_in_sync, True, 0,
                            f"MirroredStrategy over {len(devices)} local devices")
    if not config:
        raise ValueError("strategy multiworker needs TF_CONFIG (cluster and task) on every "
                         "worker; see docs/training.md")
    task = config.get("task", {})
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    patch_keras_multiworker_reduce()
    chief = task_is_chief(config)
    return Distribution(
        strategy, "multiworker", strategy.num_replicas_in_sync, chief, int(task.get("index", 0)),
        f"MultiWorkerMirroredStrategy, {cluster_size(config)} workers, this is "
        f"{task.get('type', 'worker')} {task.get('index', 0)}"
        + (" (chief)" if chief else ""))


def patch_keras_multiworker_reduce() -> None:
    """Make Keras 3's ``fit`` work under ``MultiWorkerMirroredStrategy``.

    Keras 3.15 reduces each step's logs across workers with ``strategy.reduce("MEAN", v,
    axis=0)``, which fails on the scalar loss and metrics ("Invalid reduction dimension 0 for
    input with 0 dimensions", tensorflow/tensorflow#72388). Scalars are reduced with
    ``axis=None`` instead (the mean over workers); every other case is Keras's own code.
    Applied only when a multi-worker strategy is made.
    """
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_keras_resnet_patch", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy):
            import tensorflow as tf

            def reduce_one(value):
                local = strategy.experimental_local_results(value)[0] \
                    if isinstance(value, tf.distribute.DistributedValues) else value
                axis = None if local.shape.rank == 0 else 0
                return strategy.reduce("MEAN", value, axis=axis)

            return tree.map_structure(reduce_one, values)
        return original(values, strategy, reduction)

    reduce_per_replica._keras_resnet_patch = True
    tf_trainer.reduce_per_replica = reduce_per_replica
