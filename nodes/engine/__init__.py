"""The torch engine under the node catalogue: data pipeline (decode once), the freeze-boundary
feature cache, ``fit``, optimizers and schedules, batch augmentation, metrics, checkpoints and
DistributedDataParallel. It takes plain configs and hooks and imports neither ``nodeflow`` nor
the node files, so it can be used (and tested) on its own."""
