"""mtl_hf: multi-task fine-tuning on Hugging Face Trainer: one shared encoder, task-routed heads."""

from transformers import AutoConfig, AutoModel

from .configuration_multitask import MultiTaskConfig, TaskSpec
from .modeling_multitask import MultiTaskModel, MultiTaskModelOutput
from .sampler import MultiTaskBatchSampler, SamplingStrategy
from .data import MultiTaskDataCollator, load_task_file, preprocess_task
from .export import export_task
from .loss_balancing import LossBalancing
from .onnx_backend import OnnxMultiTaskModel, export_onnx
from .pipeline import MultiTaskPipeline
from .hf_pipeline import MultiTaskTextPipeline  # registers transformers.pipeline("multitask")
from .task_types import TaskType, get_task_type, register_task_type
from .trainer import MultiTaskPredictionOutput, MultiTaskTrainer, NonFiniteLossError
from .training_args import MultiTaskTrainingArguments

# `import mtl_hf` makes AutoConfig/AutoModel know the architecture; `register_for_auto_class` makes
# `save_pretrained` write `auto_map` and copy the modelling code, for `trust_remote_code=True` without mtl_hf.
AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig, exist_ok=True)
AutoModel.register(MultiTaskConfig, MultiTaskModel, exist_ok=True)
MultiTaskConfig.register_for_auto_class()
MultiTaskModel.register_for_auto_class("AutoModel")

__version__ = "0.1.0"

__all__ = [
    "LossBalancing",
    "MultiTaskBatchSampler",
    "MultiTaskConfig",
    "MultiTaskDataCollator",
    "MultiTaskModel",
    "MultiTaskModelOutput",
    "MultiTaskPipeline",
    "MultiTaskPredictionOutput",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "NonFiniteLossError",
    "OnnxMultiTaskModel",
    "SamplingStrategy",
    "MultiTaskTextPipeline",
    "TaskSpec",
    "TaskType",
    "__version__",
    "export_onnx",
    "export_task",
    "get_task_type",
    "load_task_file",
    "preprocess_task",
    "register_task_type",
]
