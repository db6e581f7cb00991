"""EpisodicModel: an encoder and a head applied to an EpisodeBatch.

Support and query images go through the encoder in one pass (concatenated, then split),
so BatchNorm sees one batch and the encoder runs once per step. Under mixed precision
only the encoder runs in bfloat16: its features are cast back to float32 and the head
solves outside autocast (float64 models stay float64).
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn

from fewshot_sparse.data.episodes import EpisodeBatch
from fewshot_sparse.encoders import ENCODERS, build_encoder
from fewshot_sparse.errors import ConfigError
from fewshot_sparse.heads import HEADS, build_head
from fewshot_sparse.heads.output import HeadOutput
from fewshot_sparse.heads.validation import check_head_options
from fewshot_sparse.solvers.autocast import autocast_off


class EpisodicModel(nn.Module):
    """``encoder`` maps [M, *input] to [M, ...] features; ``head`` is a few-shot head.

    channels_last: feed image batches to the encoder in NHWC (faster convolutions on
        recent GPUs; call ``model.to(memory_format=torch.channels_last)`` for the weights).
    amp (argument of forward): run the encoder under bfloat16 autocast.
    Both only take effect on CUDA tensors; on CPU they are ignored, so a config can name
    them and still run anywhere.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, *, channels_last: bool = False):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.channels_last = channels_last

    def encode(self, x: torch.Tensor, amp: bool = False) -> torch.Tensor:
        """Encode a flat batch [M, *input] to features [M, D] (float32 at least)."""
        cuda = x.is_cuda
        if cuda and self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and cuda
               else contextlib.nullcontext())
        with ctx:
            feats = self.encoder(x)
        feats = feats.reshape(feats.shape[0], -1)
        return feats.float() if feats.dtype in (torch.float16, torch.bfloat16) else feats

    def features(self, batch: EpisodeBatch, amp: bool = False):
        """Support and query features, [B, N*K, D] and [B, N*Q, D], from one encoder pass."""
        s, q = batch.support_images, batch.query_images
        b, n_s, n_q = s.shape[0], s.shape[1], q.shape[1]
        flat = torch.cat([s.reshape(b * n_s, *s.shape[2:]), q.reshape(b * n_q, *q.shape[2:])])
        feats = self.encode(flat, amp=amp)
        support = feats[: b * n_s].reshape(b, n_s, -1)
        query = feats[b * n_s:].reshape(b, n_q, -1)
        return support, query

    def forward(self, batch: EpisodeBatch, amp: bool = False) -> HeadOutput:
        support, query = self.features(batch, amp=amp)
        # The head is solved in float32 even inside an outer autocast region (the package's
        # heads see to it themselves; this covers any other head module)
        with autocast_off(support.device):
            return self.head(query, support, batch.support_labels, batch.n_way)


def build_model(config) -> EpisodicModel:
    """The EpisodicModel a Config names (encoder and head from their registries)."""
    encoder = build_encoder(config.encoder.name, **config.encoder.kwargs)
    head = build_head(config.head.name, **config.head.kwargs)
    return EpisodicModel(encoder, head, channels_last=config.train.channels_last)


def check_model_config(config) -> None:
    """Build the config's head and encoder dry (the encoder on the meta device: no
    memory, no data), so that a bad value is a ConfigError naming its key, e.g.
    ``head.kwargs.lambda1: must be >= 0, got -1``, before any data is prepared."""
    h, e = config.head, config.encoder
    if h.name not in HEADS:
        raise ConfigError(f"head.name: unknown head {h.name!r}; known: {', '.join(sorted(HEADS))}")
    if e.name not in ENCODERS:
        raise ConfigError(f"encoder.name: unknown encoder {e.name!r}; "
                          f"known: {', '.join(sorted(ENCODERS))}")
    check_head_options(HEADS[h.name], h.kwargs, prefix="head.kwargs.")
    check_head_options(ENCODERS[e.name], e.kwargs, prefix="encoder.kwargs.")
    try:
        build_head(h.name, **h.kwargs)
    except ConfigError as err:
        raise ConfigError(f"head.kwargs: {err}") from None
    _dry_encoder(config)


def _dry_encoder(config) -> nn.Module:
    e = config.encoder
    try:
        with torch.device("meta"):
            return build_encoder(e.name, **e.kwargs).eval()
    except (ConfigError, TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"encoder.kwargs: {err}") from None


def check_input_shape(config, shape, where) -> None:
    """ConfigError unless the config's encoder accepts images of ``shape`` (C, H, W) from
    ``where`` (a dataset folder): checked on the meta device, before any training."""
    c, h, w = (int(v) for v in shape)
    want = config.encoder.kwargs.get("in_channels")
    if want is None:
        want = inspect.signature(ENCODERS[config.encoder.name].__init__).parameters.get(
            "in_channels", inspect.Parameter("x", inspect.Parameter.KEYWORD_ONLY)).default
    if isinstance(want, int) and want != c:
        raise ConfigError(f"encoder.kwargs.in_channels is {want} but {where} holds {c}-channel "
                          f"images; set encoder.kwargs.in_channels={c}")
    encoder = _dry_encoder(config)
    try:
        with torch.no_grad():
            encoder(torch.zeros(2, c, h, w, device="meta"))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"encoder {config.encoder.name!r} does not accept the {c}x{h}x{w} "
                          f"images of {where} ({str(err).splitlines()[0][:150]})") from None
