"""tinytitan's TrainSpec: what torchtitan builds for ``[model] name = "tinytitan"``.

``tinytitan.register`` (named by ``[experimental] custom_import`` in every config) registers it.
Everything except the flavors, the data loader, the tokenizer check and the
CPU hooks is torchtitan's own llama3 machinery, reused as is.
"""

from __future__ import annotations

from torchtitan.components.loss import build_cross_entropy_loss
from torchtitan.components.lr_scheduler import build_lr_schedulers
from torchtitan.components.optimizer import build_optimizers
from torchtitan.components.tokenizer import BaseTokenizer
from torchtitan.distributed.pipeline_parallel import pipeline_llm
from torchtitan.models.llama3 import Transformer, parallelize_llama
from torchtitan.models.llama3.model.state_dict_adapter import Llama3StateDictAdapter
from torchtitan.protocols.train_spec import TrainSpec, register_train_spec

from tinytitan.compat import spec_registered
from tinytitan.models import FLAVORS, SPEC_NAME
from tinytitan.rank import device
from tinytitan.tokenizer import LoadedTokenizer, load_tokenizer


class TrainingTokenizer(BaseTokenizer):
    """torchtitan's tokenizer interface over ``load_tokenizer``: the trainer, the data loader and
    the validator see the same ``tokenizers`` object and BOS/EOS ids as every other command."""

    def __init__(self, loaded: LoadedTokenizer):
        super().__init__()
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.bos_id, self.eos_id = loaded.bos_id, loaded.eos_id

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        ids = self.loaded.encode(text)
        return [self.bos_id] * add_bos + ids + [self.eos_id] * add_eos

    def decode(self, ids: list[int]) -> str:
        return self.loaded.decode(ids)

    def get_vocab_size(self) -> int:
        return self.loaded.vocab_size


def build_tokenizer(job_config) -> TrainingTokenizer:
    return TrainingTokenizer(load_tokenizer(job_config.model.hf_assets_path))


def parallelize(model, parallel_dims, job_config):
    model = parallelize_llama(model, parallel_dims, job_config)
    device.fsdp_sum_reductions(model)
    return model


def build_dataloader(**kwargs):
    from tinytitan.data.loader import build_dataloader as build

    return build(**kwargs)


def build_validator(**kwargs):
    """torchtitan's Validator over each source's held-out split (``tinytitan.data.heldout``)."""
    from tinytitan.data.heldout import HeldOutValidator

    return HeldOutValidator(**kwargs)


def build_metrics_processor(job_config, parallel_dims, model_args=None, tag=None):
    from tinytitan.rank.metrics import TinyMetricsProcessor

    return TinyMetricsProcessor(job_config, parallel_dims, tag)


def train_spec() -> TrainSpec:
    return TrainSpec(
        model_cls=Transformer,
        model_args=FLAVORS,
        parallelize_fn=parallelize,
        pipelining_fn=pipeline_llm,
        build_optimizers_fn=build_optimizers,
        build_lr_schedulers_fn=build_lr_schedulers,
        build_dataloader_fn=build_dataloader,
        build_tokenizer_fn=build_tokenizer,
        build_loss_fn=build_cross_entropy_loss,
        build_validator_fn=build_validator,
        build_metrics_processor_fn=build_metrics_processor,
        state_dict_adapter=Llama3StateDictAdapter,
    )


def register() -> None:
    """Registers the spec once per process (torchtitan refuses a second registration)."""
    if not spec_registered(SPEC_NAME):
        register_train_spec(SPEC_NAME, train_spec())
