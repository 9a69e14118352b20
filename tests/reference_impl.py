"""A deliberately plain re-statement of the official algorithm, used only by the tests.

It follows the official files step by step (pad after ``norm1`` with zeros, group, add DPB computed for
the group shape, mask padded keys with -1e6, explicit softmax, ungroup, crop) on the *official key
layout*, sharing no code with the package. Comparing the package against it at many input sizes extends
the golden files (which cover a handful of sizes) to arbitrary ones.

``rule``: ``"main_det"`` (models/crossformer_backbone_det.py: small map -> one group of max(H, W)),
``"v1_det"`` (models/crossformer_backbone.py: small map -> square groups of min(H, W); LDA with a fixed
interval and groups that follow the input).
"""
import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor


def _ln(x: Tensor, sd: Dict[str, Tensor], prefix: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], 1e-5)


def _linear(x: Tensor, sd: Dict[str, Tensor], prefix: str) -> Tensor:
    return F.linear(x, sd[prefix + ".weight"], sd.get(prefix + ".bias"))


def _dpb(sd: Dict[str, Tensor], prefix: str, gh: int, gw: int) -> Tensor:
    hs = torch.arange(1 - gh, gh)
    ws = torch.arange(1 - gw, gw)
    biases = torch.stack(torch.meshgrid([hs, ws], indexing="ij")).flatten(1).transpose(0, 1).float()
    pos = _linear(biases, sd, prefix + ".pos_proj")
    for name in ("pos1", "pos2", "pos3"):
        pos = _linear(F.relu(_ln(pos, sd, f"{prefix}.{name}.0")), sd, f"{prefix}.{name}.2")
    coords = torch.stack(torch.meshgrid([torch.arange(gh), torch.arange(gw)], indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += gh - 1
    rel[:, :, 1] += gw - 1
    rel[:, :, 0] *= 2 * gw - 1
    index = rel.sum(-1)
    return pos[index.view(-1)].view(gh * gw, gh * gw, -1).permute(2, 0, 1)


def _block(x: Tensor, H: int, W: int, sd: Dict[str, Tensor], p: str, heads: int, G: int, I: int, lda: bool, rule: str) -> Tensor:
    B, L, C = x.shape
    if min(H, W) <= G:
        lda = False
        G = max(H, W) if rule == "main_det" else min(H, W)
    shortcut = x
    x = _ln(x, sd, p + ".norm1").view(B, H, W, C)
    if rule == "v1_det":
        size_div = I if lda else G
    else:
        size_div = I * G if lda else G
    pad_r = (size_div - W % size_div) % size_div
    pad_b = (size_div - H % size_div) % size_div
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    Hp, Wp = H + pad_b, W + pad_r
    mask = torch.zeros(1, Hp, Wp, 1)
    if pad_b:
        mask[:, -pad_b:] = -1
    if pad_r:
        mask[:, :, -pad_r:] = -1
    if not lda:
        Gh = Gw = G
        x = x.reshape(B, Hp // G, G, Wp // G, G, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, G * G, C)
        mask = mask.reshape(1, Hp // G, G, Wp // G, G, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, 1, G * G)
    elif rule == "v1_det":
        Gh, Gw = Hp // I, Wp // I
        x = x.reshape(B, Gh, I, Gw, I, C).permute(0, 2, 4, 1, 3, 5).reshape(-1, Gh * Gw, C)
        mask = mask.reshape(1, Gh, I, Gw, I, 1).permute(0, 2, 4, 1, 3, 5).reshape(-1, 1, Gh * Gw)
    else:
        Gh = Gw = G
        Rh, Rw = Hp // (G * I), Wp // (G * I)
        x = x.reshape(B, Rh, G, I, Rw, G, I, C).permute(0, 1, 4, 3, 6, 2, 5, 7).reshape(-1, G * G, C)
        mask = mask.reshape(1, Rh, G, I, Rw, G, I, 1).permute(0, 1, 4, 3, 6, 2, 5, 7).reshape(-1, 1, G * G)
    n = Gh * Gw
    qkv = _linear(x, sd, p + ".attn.qkv").reshape(-1, n, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (C // heads) ** -0.5, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1) + _dpb(sd, p + ".attn.pos", Gh, Gw).unsqueeze(0)
    if pad_r or pad_b:
        nG = mask.shape[0]
        attn_mask = torch.zeros(nG, n, n).masked_fill(mask < 0, -1000000.0)
        attn = (attn.view(B, nG, heads, n, n) + attn_mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, n, n)
    x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, C)
    x = _linear(x, sd, p + ".attn.proj")
    if not lda:
        x = x.reshape(B, Hp // G, Wp // G, G, G, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    elif rule == "v1_det":
        x = x.reshape(B, I, I, Gh, Gw, C).permute(0, 3, 1, 4, 2, 5).reshape(B, Hp, Wp, C)
    else:
        x = x.reshape(B, Rh, Rw, I, I, G, G, C).permute(0, 1, 5, 3, 2, 6, 4, 7).reshape(B, Hp, Wp, C)
    x = shortcut + x[:, :H, :W].reshape(B, H * W, C)
    h = _linear(_ln(x, sd, p + ".norm2"), sd, p + ".mlp.fc1")
    x = x + _linear(F.gelu(h), sd, p + ".mlp.fc2")
    if p + ".ex_conv.weight" in sd:
        y = x.view(B, H, W, C).permute(0, 3, 1, 2)
        y = F.conv2d(y, sd[p + ".ex_conv.weight"], sd[p + ".ex_conv.bias"], padding=1, groups=C)
        x = _ln(y.permute(0, 2, 3, 1).reshape(B, H * W, C), sd, p + ".ex_ln")
    return x


def _cel(x: Tensor, sd: Dict[str, Tensor], prefix: str, kernels: List[int], stride: int) -> Tensor:
    outs = [F.conv2d(x, sd[f"{prefix}.{i}.weight"], sd[f"{prefix}.{i}.bias"], stride=stride, padding=(k - stride) // 2)
            for i, k in enumerate(kernels)]
    return torch.cat([o.flatten(2).transpose(1, 2) for o in outs], dim=2)


def reference_backbone(x: Tensor, sd: Dict[str, Tensor], config: dict, rule: str) -> List[Tensor]:
    """Four stage outputs ``(B, C, H, W)`` of the official dense backbone for an image batch ``x``."""
    depths, heads = config["depths"], config["num_heads"]
    groups, intervals = config["group_size"], config["crs_interval"]
    B = x.shape[0]
    H, W = x.shape[2] // 4, x.shape[3] // 4
    x = _ln(_cel(x, sd, "patch_embed.projs", [4, 8, 16, 32], 4), sd, "patch_embed.norm")
    outs = []
    for i in range(len(depths)):
        for j in range(depths[i]):
            x = _block(x, H, W, sd, f"layers.{i}.blocks.{j}", heads[i], groups[i], intervals[i], j % 2 == 1, rule)
        C = x.shape[-1]
        outs.append(x.view(B, H, W, C).permute(0, 3, 1, 2))
        if i < len(depths) - 1:
            y = _ln(x, sd, f"layers.{i}.downsample.norm").view(B, H, W, C).permute(0, 3, 1, 2)
            x = _cel(y, sd, f"layers.{i}.downsample.reductions", [2, 4], 2)
            H, W = math.floor(H / 2), math.floor(W / 2)
    return outs
