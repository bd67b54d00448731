"""MMAE-ECG as a plain ``nn.Module``: multi-scale masked autoencoder over ECG segments.

Shapes: ``x [B, K, Q]`` (K leads, Q samples). Global tokens are the ``T = Q / S`` segments of ``S`` samples
(all leads); local tokens are the ``delta * r`` sub-segments of ``S_l = S / r`` samples inside a window of
``delta`` consecutive segments. Training: one random window per sample and stratified random masks (ratio
``mask_ratio`` inside the window and outside it); a local token is hidden exactly when its parent segment is, so
no view ever shows what the other must reconstruct. The loss is MSE on the hidden segments after per-segment,
per-lead normalisation (MAE's ``norm_pix_loss``); a small extra head also predicts each hidden segment's per-lead
mean and standard deviation from context (``stats_weight``), so that the reconstruction can be put back into input
units for scoring (``score_space="signal"``): amplitude, baseline and flat-line anomalies are invisible to a
normalised error alone. Eval: ``M = inference_masks`` complementary masks (segment
``t`` hidden in mask ``t mod M``) x the windows tiling the signal, all batched, fixed index buffers, no
data-dependent Python control flow (traceable by ``torch.export`` with a dynamic batch).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn

__all__ = ["Block", "MmaeEcgModel", "MmaeTrainOutput"]

SCORE_SPACES = ("normalized", "signal")
SCORE_REDUCTIONS = ("mean", "max", "topk_mean")


class MmaeTrainOutput(NamedTuple):
    """Training-mode output: the loss and its parts (normalised reconstruction per scale, segment statistics)."""

    loss: torch.Tensor
    loss_global: torch.Tensor
    loss_local: torch.Tensor
    loss_stats: torch.Tensor


class Block(nn.Module):
    """Pre-LN Transformer block: ``x + MSA(LN(x))``, then ``x + MLP(LN(x))`` (GELU)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(n, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(n, length, dim))
        return x + self.mlp(self.norm2(x))


class MmaeEcgModel(nn.Module):
    """The MMAE-ECG network; see the module docstring and the plugin README for the reading of the paper.

    Args:
        n_leads, length: K and Q of the input.
        segment_len: S, samples per global segment (Q must be a multiple).
        local_segment_len: S_l, samples per local token (S must be a multiple).
        local_segments: delta, global segments per local window (T must be a multiple; a multiple of M).
        embed_dim, depth, num_heads, mlp_ratio: the encoder.
        decoder_dim, decoder_heads: the one-block decoder.
        mask_ratio: theta, hidden share of segments in training (inside and outside the window separately).
        inference_masks: M complementary masks at inference (T and delta must be multiples).
        norm_eps: epsilon of the per-segment target normalisation.
        score_space: ``normalized`` (error of the normalised segments, as the loss) or ``signal`` (the prediction
            put back into input units with the predicted segment mean and standard deviation).
        score_reduction: ``mean``, ``max`` or ``topk_mean`` (mean of the top ``score_top_fraction`` points).
        local_weight: weight of the local loss against the global one.
        stats_weight: weight of the segment-statistics loss (0 switches the statistics head off).
        single_scale: the ablation without the local scale: only global segments are encoded, reconstructed,
            trained on and scored.
    """

    def __init__(self, n_leads: int = 1, length: int = 256, segment_len: int = 16, local_segment_len: int = 4,
                 local_segments: int = 4, embed_dim: int = 64, depth: int = 4, num_heads: int = 4,
                 mlp_ratio: float = 4.0, decoder_dim: int = 64, decoder_heads: int = 4, mask_ratio: float = 0.5,
                 inference_masks: int = 2, norm_eps: float = 1e-6, score_space: str = "signal",
                 score_reduction: str = "mean", score_top_fraction: float = 0.1, local_weight: float = 1.0,
                 stats_weight: float = 1.0, single_scale: bool = False) -> None:
        super().__init__()
        self.n_leads, self.length = int(n_leads), int(length)
        self.segment_len, self.local_segment_len = int(segment_len), int(local_segment_len)
        self.n_segments = self.length // self.segment_len
        self.split = self.segment_len // self.local_segment_len
        self.local_segments = int(local_segments)
        self.n_local = self.local_segments * self.split
        self.mask_ratio = float(mask_ratio)
        self.norm_eps = float(norm_eps)
        self.score_space = score_space
        self.score_reduction = score_reduction
        self.local_weight = float(local_weight)
        self.stats_weight = float(stats_weight)
        self.single_scale = bool(single_scale)
        k, t, delta = self.n_leads, self.n_segments, self.local_segments
        self.hidden_in = min(max(round(self.mask_ratio * delta), 1), delta - 1)
        self.hidden_out = min(max(round(self.mask_ratio * (t - delta)), 0), max(t - delta - 1, 0))
        self.top_k = max(1, round(float(score_top_fraction) * k * self.length))

        self.embed_global = nn.Linear(k * self.segment_len, embed_dim)
        self.embed_local = nn.Linear(k * self.local_segment_len, embed_dim)
        self.pos_global = nn.Parameter(torch.zeros(1, t, embed_dim))
        self.pos_local = nn.Parameter(torch.zeros(1, self.n_local, embed_dim))
        self.encoder = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.encoder_norm = nn.LayerNorm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token_global = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.mask_token_local = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_global = nn.Parameter(torch.zeros(1, t, decoder_dim))
        self.decoder_pos_local = nn.Parameter(torch.zeros(1, self.n_local, decoder_dim))
        self.decoder = Block(decoder_dim, decoder_heads, mlp_ratio)
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.head_global = nn.Linear(decoder_dim, k * self.segment_len)
        self.head_local = nn.Linear(decoder_dim, k * self.local_segment_len)
        self.stats_global = nn.Linear(decoder_dim, k * 2)  # per-lead mean and standard deviation of a segment
        self.stats_local = nn.Linear(decoder_dim, k * 2)
        self._init_weights()
        self._build_inference_masks(int(inference_masks))

    # ------------------------------------------------------------------ set-up
    def _init_weights(self) -> None:
        for p in (self.pos_global, self.pos_local, self.mask_token_global, self.mask_token_local,
                  self.decoder_pos_global, self.decoder_pos_local):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _build_inference_masks(self, masks: int) -> None:
        """Fixed masks of the eval passes: pass ``p = m * W + w`` hides segments ``t = m (mod M)`` and uses the
        local window starting at segment ``w * delta``."""
        t, delta, r = self.n_segments, self.local_segments, self.split
        windows = t // delta
        self.inference_masks, self.passes = masks, masks * windows
        positions = torch.arange(t)
        hidden = torch.stack([positions % masks == m for m in range(masks) for _ in range(windows)])
        window = torch.tensor([w * delta for _ in range(masks) for w in range(windows)], dtype=torch.long)
        self.register_buffer("eval_hidden", hidden, persistent=False)  # [P, T] bool
        self.register_buffer("eval_window", window, persistent=False)  # [P] first segment of the window
        # one-hot map of each pass's local token j to its sub-segment index in the whole signal
        scatter = torch.zeros(self.passes, self.n_local, t * r)
        for p in range(self.passes):
            scatter[p, torch.arange(self.n_local), int(window[p]) * r + torch.arange(self.n_local)] = 1.0
        self.register_buffer("eval_scatter", scatter, persistent=False)  # [P, n_local, T * r]
        parent = window[:, None] + torch.arange(self.n_local)[None] // r
        hidden_local = torch.gather(hidden, 1, parent)
        self.register_buffer("eval_count_global", hidden.float().sum(0).clamp_min(1.0), persistent=False)
        self.register_buffer("eval_count_local",
                             torch.einsum("pj,pjn->n", hidden_local.float(), scatter).clamp_min(1.0),
                             persistent=False)
        self.eval_hidden_global = t // masks
        self.eval_hidden_local = (delta // masks) * r

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _tokens(x: torch.Tensor, size: int) -> torch.Tensor:
        """``[N, K, Q]`` -> ``[N, Q / size, K, size]``."""
        n, k, q = x.shape
        return x.reshape(n, k, q // size, size).permute(0, 2, 1, 3)

    def _normalised(self, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-segment, per-lead normalisation; returns the normalised target and the (mean, std) statistics."""
        mean = seg.mean(dim=-1, keepdim=True)
        std = (seg.var(dim=-1, keepdim=True, unbiased=False) + self.norm_eps).sqrt()
        return (seg - mean) / std, torch.cat([mean, std], dim=-1)

    def _random_masks(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Training masks: a random window per sample; ``hidden_in`` segments hidden inside it and ``hidden_out``
        outside it, so every sample hides the same number of tokens."""
        t, delta = self.n_segments, self.local_segments
        window = torch.randint(0, t - delta + 1, (n,), device=device)
        positions = torch.arange(t, device=device)[None]
        inside = (positions >= window[:, None]) & (positions < window[:, None] + delta)
        noise = torch.rand(n, t, device=device)
        rank_in = torch.argsort(torch.argsort(noise + (~inside).float() * 2.0, dim=1), dim=1)
        rank_out = torch.argsort(torch.argsort(noise + inside.float() * 2.0, dim=1), dim=1)
        hidden = (inside & (rank_in < self.hidden_in)) | (~inside & (rank_out < self.hidden_out))
        return hidden, window

    def _reconstruct(self, x: torch.Tensor, hidden: torch.Tensor, window: torch.Tensor, n_hidden_global: int,
                     n_hidden_local: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Encode the visible tokens of both scales together and decode all of them; return, per scale (global,
        local), the normalised prediction, the predicted per-lead (mean, std), the raw segments and the hidden mask."""
        n, k, _ = x.shape
        t, r, n_local = self.n_segments, self.split, self.n_local
        seg_global = self._tokens(x, self.segment_len)  # [N, T, K, S]
        # explicit sizes, not -1: OpenVINO's shape inference gets the -1 of the local reshape wrong with a dynamic
        # batch (it infers [?, n_local, 1] and the conversion fails)
        tokens_global = self.embed_global(seg_global.reshape(n, t, k * self.segment_len)) + self.pos_global
        offsets = torch.arange(n_local, device=x.device)[None]
        parent = window[:, None] + offsets // r  # [N, n_local] segment of each local token
        sub_index = window[:, None] * r + offsets  # [N, n_local] sub-segment index in the whole signal
        sub_all = self._tokens(x, self.local_segment_len)  # [N, T * r, K, S_l]
        seg_local = torch.gather(sub_all, 1, sub_index[:, :, None, None].expand(-1, -1, k, self.local_segment_len))
        anchor = torch.gather(self.pos_global.expand(n, -1, -1), 1,
                              parent[:, :, None].expand(-1, -1, self.pos_global.shape[-1]))
        tokens_local = self.embed_local(seg_local.reshape(n, n_local, k * self.local_segment_len)) + self.pos_local + \
            anchor
        hidden_local = torch.gather(hidden, 1, parent)

        n_vis_g, n_vis_l = t - n_hidden_global, n_local - n_hidden_local
        order_g = torch.argsort(hidden.to(torch.int32), dim=1, stable=True)  # visible first, in time order
        order_l = torch.argsort(hidden_local.to(torch.int32), dim=1, stable=True)
        dim = tokens_global.shape[-1]
        visible_g = torch.gather(tokens_global, 1, order_g[:, :n_vis_g, None].expand(-1, -1, dim))
        visible_l = torch.gather(tokens_local, 1, order_l[:, :n_vis_l, None].expand(-1, -1, dim))
        z = visible_g if self.single_scale else torch.cat([visible_g, visible_l], dim=1)
        for block in self.encoder:
            z = block(z)
        z = self.decoder_embed(self.encoder_norm(z))
        d = z.shape[-1]
        full_g = torch.cat([z[:, :n_vis_g], self.mask_token_global.expand(n, n_hidden_global, -1)], dim=1)
        local_z = z[:, n_vis_g:] if not self.single_scale else z.new_zeros(n, n_vis_l, z.shape[-1])
        full_l = torch.cat([local_z, self.mask_token_local.expand(n, n_hidden_local, -1)], dim=1)
        full_g = torch.gather(full_g, 1, torch.argsort(order_g, dim=1)[:, :, None].expand(-1, -1, d))
        full_l = torch.gather(full_l, 1, torch.argsort(order_l, dim=1)[:, :, None].expand(-1, -1, d))
        dec_anchor = torch.gather(self.decoder_pos_global.expand(n, -1, -1), 1, parent[:, :, None].expand(-1, -1, d))
        full_g = full_g + self.decoder_pos_global
        full_l = full_l + self.decoder_pos_local + dec_anchor
        out = self.decoder_norm(self.decoder(full_g if self.single_scale else torch.cat([full_g, full_l], dim=1)))
        if self.single_scale:  # the local outputs are those of the global tokens' heads on nothing: left out
            out = torch.cat([out, out.new_zeros(n, n_local, d)], dim=1)
        pred_global = self.head_global(out[:, :t]).reshape(n, t, k, self.segment_len)
        pred_local = self.head_local(out[:, t:]).reshape(n, n_local, k, self.local_segment_len)
        stats_global = self.stats_global(out[:, :t]).reshape(n, t, k, 2)
        stats_local = self.stats_local(out[:, t:]).reshape(n, n_local, k, 2)
        return (pred_global, stats_global, seg_global, hidden), (pred_local, stats_local, seg_local, hidden_local)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> MmaeTrainOutput | InferenceBatch:
        """Training: the masked-reconstruction loss. Eval: ``InferenceBatch(pred_score [B], anomaly_map [B, K, Q])``."""
        if self.training:
            return self._loss(x)
        return self._infer(x)

    def _loss(self, x: torch.Tensor) -> MmaeTrainOutput:
        hidden, window = self._random_masks(x.shape[0], x.device)
        scales = self._reconstruct(x, hidden, window, self.hidden_in + self.hidden_out, self.hidden_in * self.split)
        losses, stats_losses = [], []
        for pred, stats, seg, hid in scales:
            target, target_stats = self._normalised(seg)
            weight = hid.float()
            count = weight.sum().clamp_min(1)
            losses.append((((pred - target) ** 2).mean(dim=(-1, -2)) * weight).sum() / count)
            stats_losses.append((((stats - target_stats) ** 2).mean(dim=(-1, -2)) * weight).sum() / count)
        loss_g, loss_l = losses
        if self.single_scale:
            loss = loss_g + self.stats_weight * stats_losses[0]
            return MmaeTrainOutput(loss, loss_g.detach(), loss_l.detach() * 0, stats_losses[0].detach())
        loss_stats = 0.5 * (stats_losses[0] + stats_losses[1])
        loss = (loss_g + self.local_weight * loss_l) / (1.0 + self.local_weight) + self.stats_weight * loss_stats
        return MmaeTrainOutput(loss, loss_g.detach(), loss_l.detach(), loss_stats.detach())

    def _point_errors(self, pred: torch.Tensor, stats: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """Squared error per point: of the normalised segment, or in input units with the predicted statistics."""
        if self.score_space == "signal":
            return (pred * stats[..., 1:].clamp_min(0.0) + stats[..., :1] - seg) ** 2
        target, _ = self._normalised(seg)
        return (pred - target) ** 2

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-point (lead, time) reconstruction error ``[B, K, Q]``, averaged over the complementary masks and
        the two scales."""
        b, k, q = x.shape
        p, t = self.passes, self.n_segments
        xs = x[:, None].expand(b, p, k, q).reshape(b * p, k, q)
        hidden = self.eval_hidden[None].expand(b, p, t).reshape(b * p, t)
        window = self.eval_window[None].expand(b, p).reshape(b * p)
        (pred_g, stats_g, seg_g, hid_g), (pred_l, stats_l, seg_l, hid_l) = self._reconstruct(
            xs, hidden, window, self.eval_hidden_global, self.eval_hidden_local)
        err_g = self._point_errors(pred_g, stats_g, seg_g) * hid_g[:, :, None, None]
        err_g = err_g.reshape(b, p, t, k, self.segment_len).sum(1) / self.eval_count_global[None, :, None, None]
        map_g = err_g.permute(0, 2, 1, 3).reshape(b, k, q)
        if self.single_scale:
            return map_g
        err_l = self._point_errors(pred_l, stats_l, seg_l) * hid_l[:, :, None, None]
        err_l = err_l.reshape(b, p, self.n_local, k, self.local_segment_len)
        err_l = torch.einsum("bpjks,pjn->bnks", err_l, self.eval_scatter) / self.eval_count_local[None, :, None, None]
        map_l = err_l.permute(0, 2, 1, 3).reshape(b, k, q)
        return 0.5 * (map_g + map_l)

    def score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Sample score from the point map (``score_reduction``)."""
        flat = anomaly_map.reshape(anomaly_map.shape[0], -1)
        if self.score_reduction == "max":
            return flat.amax(dim=1)
        if self.score_reduction == "topk_mean":
            return torch.topk(flat, self.top_k, dim=1).values.mean(dim=1)
        return flat.mean(dim=1)

    def _infer(self, x: torch.Tensor) -> InferenceBatch:
        anomaly_map = self.anomaly_map(x)
        return InferenceBatch(pred_score=self.score(anomaly_map), anomaly_map=anomaly_map)

    @property
    def passes_per_sample(self) -> int:
        """Masked forward passes per sample at inference (M complementary masks x windows)."""
        return self.passes

    def extra_repr(self) -> str:
        return (f"K={self.n_leads}, Q={self.length}, T={self.n_segments} x {self.segment_len}, local "
                f"{self.n_local} x {self.local_segment_len} (window {self.local_segments} segments), "
                f"mask_ratio={self.mask_ratio}, inference passes={self.passes}"
                + (", single scale" if self.single_scale else ""))

