"""Former home of the task-independent training machinery; kept as re-exports for one release.

Processes and collectives are now in :mod:`crossformer_vision.utils.distributed`, crash-safe files in
:mod:`crossformer_vision.utils.files`, run folders, checkpoint files and RNG state in
:mod:`crossformer_vision.train.checkpoint`, progress and logs in :mod:`crossformer_vision.train.report`, the
evaluation sampler in :mod:`crossformer_vision.data.samplers`.
"""
from .data.samplers import ShardSampler
from .train.checkpoint import (RunDirGuard, capture_rng_state, check_state, create_run_dir, load_state_file,
                               restore_rng_state, resume_rng, seed_everything, stopped_note, write_config)
from .train.report import Progress, TensorBoardLogger, plot_history, write_csv
from .utils.distributed import (DistInfo, MetricSums, all_gather_object, all_reduce_sum, available_cores, barrier,
                                broadcast_object, cleanup_distributed, configure_threads, init_distributed,
                                is_main_process, resolve_device, unwrap_model)
from .utils.files import (atomic_save, atomic_write_bytes, atomic_write_text, describe_os_error,
                          remove_stale_temp_files)

__all__ = ["DistInfo", "MetricSums", "Progress", "RunDirGuard", "ShardSampler", "TensorBoardLogger", "all_gather_object",
           "all_reduce_sum", "atomic_save", "atomic_write_bytes", "atomic_write_text", "available_cores", "barrier",
           "broadcast_object", "capture_rng_state", "check_state", "cleanup_distributed", "configure_threads",
           "create_run_dir", "describe_os_error", "init_distributed", "is_main_process", "load_state_file",
           "plot_history", "remove_stale_temp_files", "resolve_device", "restore_rng_state", "resume_rng",
           "seed_everything", "stopped_note", "unwrap_model", "write_config", "write_csv"]
