"""tinytitan's TrainSpec: what torchtitan builds for ``[model] name = "tinytitan"``.

``tinytitan.register`` (named by ``[experimental] custom_import`` in every config) registers it.
tinytitan's own parts: the flavors, the tokenizer (``load_tokenizer`` behind torchtitan's
interface), the attention settings and EOS id of the model args, the data loader, the
per-source validator, the metrics processor (ETA, data counters, ``metrics.jsonl``), the CPU
hook after parallelizing, the chunked loss (``tinytitan.rank.loss``: a Transformer subclass
whose forward also takes labels) and Muon (``tinytitan.rank.muon``). The rest (model, parallelization, AdamW, LR schedule,
plain loss, pipelining, state-dict adapter) is torchtitan's own llama3 machinery, reused as is.
"""

from __future__ import annotations

import dataclasses
import functools

from torchtitan.components.lr_scheduler import build_lr_schedulers
from torchtitan.components.tokenizer import BaseTokenizer
from torchtitan.distributed.pipeline_parallel import pipeline_llm
from torchtitan.models.llama3 import TransformerModelArgs, parallelize_llama
from torchtitan.models.llama3.model.state_dict_adapter import Llama3StateDictAdapter
from torchtitan.protocols.train_spec import TrainSpec, register_train_spec

from tinytitan.compat import prefer_sdpa_backend, spec_registered
from tinytitan.models import FLAVORS, SPEC_NAME
from tinytitan.rank import device, loss, muon
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


@functools.cache
def _tokenizer(path: str) -> LoadedTokenizer:
    """Loaded once per process: the trainer's tokenizer and the model args' EOS id come from the same one."""
    return load_tokenizer(path)


def build_tokenizer(job_config) -> TrainingTokenizer:
    return TrainingTokenizer(_tokenizer(job_config.model.hf_assets_path))


@dataclasses.dataclass
class ModelArgs(TransformerModelArgs):
    """A flavor's args, completed from the job config as torchtitan builds the model: the attention kernel
    and mask of ``[model]`` (``tinytitan.job_config.Model``), and the EOS id a block-causal mask splits on.

    torchtitan's llama3 builds its document mask from the trainer's tokenizer (``tokenizer.eos_id``); the
    args carry the same id so that what they print (and save) is what the mask uses, not their default 0.

    ``dense_mask``: ``attn_type = "flex"`` on a CPU rank, where FlexAttention has no backward pass; the model
    then computes the same mask exactly with SDPA (``tinytitan.rank.attention``). False with an accelerator.
    """

    dense_mask: bool = False

    def update_from_config(self, job_config, **kwargs) -> None:
        super().update_from_config(job_config, **kwargs)
        self.attn_type = getattr(job_config.model, "attn_type", "sdpa")
        self.attn_mask_type = getattr(job_config.model, "attn_mask_type", "causal")
        self.eos_id = _tokenizer(job_config.model.hf_assets_path).eos_id
        self.dense_mask = self.attn_type == "flex" and device.cpu_mode()


def model_args() -> dict[str, ModelArgs]:
    return {name: ModelArgs(**{f.name: getattr(args, f.name) for f in dataclasses.fields(args)})
            for name, args in FLAVORS.items()}  # fmt: skip


def parallelize(model, parallel_dims, job_config):
    loss.attach(model, job_config)  # [loss] kind = "chunked": before compile and FSDP see the output module
    backend = getattr(job_config.model, "sdpa_backend", "auto")
    if backend != "auto":  # [model] sdpa_backend: before compile captures the kernel choice
        prefer_sdpa_backend(model, backend)
    model = parallelize_llama(model, parallel_dims, job_config)
    device.fsdp_sum_reductions(model)
    return model


def build_dataloader(**kwargs):
    from tinytitan.data.build import build_dataloader as build

    return build(**kwargs)


def build_validator(**kwargs):
    """torchtitan's Validator over each source's held-out split (``tinytitan.data.heldout``)."""
    from tinytitan.rank.validator import HeldOutValidator

    return HeldOutValidator(**kwargs)


def build_metrics_processor(job_config, parallel_dims, model_args=None, tag=None):
    from tinytitan.rank.metrics import TinyMetricsProcessor

    return TinyMetricsProcessor(job_config, parallel_dims, tag)


def train_spec() -> TrainSpec:
    return TrainSpec(
        model_cls=loss.TinyTransformer,
        model_args=model_args(),
        parallelize_fn=parallelize,
        pipelining_fn=pipeline_llm,
        build_optimizers_fn=muon.build_optimizers,
        build_lr_schedulers_fn=build_lr_schedulers,
        build_dataloader_fn=build_dataloader,
        build_tokenizer_fn=build_tokenizer,
        build_loss_fn=loss.build_loss,
        build_validator_fn=build_validator,
        build_metrics_processor_fn=build_metrics_processor,
        state_dict_adapter=Llama3StateDictAdapter,
    )


def register() -> None:
    """Registers the spec once per process (torchtitan refuses a second registration)."""
    if not spec_registered(SPEC_NAME):
        register_train_spec(SPEC_NAME, train_spec())
